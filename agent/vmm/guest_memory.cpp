#include "agent/vmm/guest_memory.hpp"

#include "agent/vmm/memory_layout.hpp"
#include "agent/vmm/ram_prefill.hpp"
#include "common/error.hpp"
#include "common/file_io.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace ferry {

namespace {

// The page size of the filesystem under fd: hugetlbfs reports its huge
// page size, everything else is taken as base pages.
uint64_t backing_page_of(int fd) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0)
    return static_cast<uint64_t>(fs.f_bsize);
  return page_size;
}

caf::expected<void> check_multiple(uint64_t size, uint64_t backing_page) {
  if (size % backing_page == 0)
    return {};
  return make_ferry_error(errc::invalid_argument,
                          "memory size " + std::to_string(size) +
                            " is not a multiple of the backend's page size " +
                            std::to_string(backing_page) + " (huge pages)");
}

// MFD_HUGE_SHIFT: <linux/memfd.h> would clash with glibc's MFD_* macros.
constexpr unsigned memfd_huge_shift = 26;

// huge_size 0 with hugetlb: the kernel's default huge page size.
caf::expected<unique_fd> make_memfd(uint64_t size, bool hugetlb, uint64_t huge_size) {
  unsigned flags = MFD_CLOEXEC;
  if (hugetlb) {
    flags |= MFD_HUGETLB;
    if (huge_size != 0)
      flags |= static_cast<unsigned>(std::countr_zero(huge_size)) << memfd_huge_shift;
  }
  unique_fd fd{::memfd_create("ferry-guest-ram", flags)};
  if (!fd)
    return make_system_error(hugetlb ? "memfd_create(hugetlb): this kernel offers no huge pages "
                                       "of that size"
                                     : "memfd_create");
  if (hugetlb) {
    if (auto ok = check_multiple(size, backing_page_of(fd.get())); !ok)
      return ok.error();
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    return make_system_error("ftruncate(guest RAM memfd)");
  return fd;
}

// Copies the data extents of `src` within [begin, end) (holes stay zero in
// the fresh memfd, which keeps sparse pattern files cheap to load) into `dst`.
caf::expected<void> copy_data_extents(int src, uint8_t* dst, uint64_t begin, uint64_t end) {
  auto pos = static_cast<off_t>(begin);
  while (static_cast<uint64_t>(pos) < end) {
    off_t data = ::lseek(src, pos, SEEK_DATA);
    if (data < 0 || static_cast<uint64_t>(data) >= end)
      break; // ENXIO: no data past pos
    off_t hole = ::lseek(src, data, SEEK_HOLE);
    if (hole < 0)
      hole = static_cast<off_t>(end);
    const uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    uint64_t at = static_cast<uint64_t>(data);
    while (at < stop) {
      const ssize_t n = ::pread(src, dst + at, stop - at, static_cast<off_t>(at));
      if (n < 0)
        return make_system_error("pread(memory backend file)");
      if (n == 0)
        break;
      at += static_cast<uint64_t>(n);
    }
    pos = static_cast<off_t>(stop);
  }
  return {};
}

// Threads that fill guest RAM (loading a file, prefilling): the cost is the
// kernel's first touch of fresh pages, which scales with cores up to a few.
unsigned ram_threads() {
  return std::clamp(std::thread::hardware_concurrency(), 1U, 4U);
}

// Loads the file's first `limit` bytes in page-aligned slices on named
// threads ("ram-load/N"): the time goes into first touches of fresh guest
// pages, which the kernel handles in parallel (1 GiB: 0.74 s on one thread).
caf::expected<void> load_file(int src, uint64_t src_size, uint8_t* dst, uint64_t limit) {
  const uint64_t end = std::min(src_size, limit);
  constexpr uint64_t min_slice = uint64_t{16} << 20;
  const uint64_t slices = std::min<uint64_t>(ram_threads(), std::max<uint64_t>(1, end / min_slice));
  const uint64_t step = (end / slices + page_size - 1) / page_size * page_size;
  std::vector<caf::expected<void>> done(slices, caf::expected<void>{});
  std::vector<std::thread> workers;
  for (uint64_t k = 1; k < slices; ++k) {
    const uint64_t b = std::min(end, k * step);
    const uint64_t e = std::min(end, b + step);
    try {
      workers.emplace_back([&, k, b, e] {
        ::pthread_setname_np(::pthread_self(), ("ram-load/" + std::to_string(k)).c_str());
        done[k] = copy_data_extents(src, dst, b, e);
      });
    } catch (const std::system_error&) {
      done[k] = copy_data_extents(src, dst, b, e); // no thread to spare: this one does it
    }
  }
  done[0] = copy_data_extents(src, dst, 0, std::min(end, step));
  for (auto& w : workers)
    w.join();
  for (auto& d : done)
    if (!d)
      return d.error();
  return {};
}

caf::expected<uint8_t*> map_shared(int fd, uint64_t size, uint64_t backing_page) {
  // Huge pages are reserved by the mapping: a shortage fails here, where
  // base pages are promised lazily (the kernel finds them on first touch).
  const bool huge = backing_page != page_size;
  void* p =
    ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | (huge ? 0 : MAP_NORESERVE), fd, 0);
  if (p == MAP_FAILED && huge && errno == ENOMEM)
    return make_ferry_error(errc::invalid_argument,
                            "not enough free huge pages for " + std::to_string(size >> 20) +
                              " MiB of guest RAM in " + std::to_string(backing_page >> 10) +
                              " KiB pages (HugePages_Free in /proc/meminfo; vm.nr_hugepages "
                              "reserves them)");
  if (p == MAP_FAILED)
    return make_system_error("mmap(guest RAM)");
  // Guest RAM is huge and mostly cold: keep it out of core dumps.
  ::madvise(p, size, MADV_DONTDUMP);
  return static_cast<uint8_t*>(p);
}

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
constexpr uint64_t pagemap_present = uint64_t{1} << 63;
constexpr uint64_t pagemap_swapped = uint64_t{1} << 62;

} // namespace

caf::expected<guest_memory> guest_memory::anonymous(uint64_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return make_system_error("mmap(guest RAM)");
  // Huge pages where the kernel offers them for the asking (THP "madvise"):
  // one fault fills 2 MiB, where base pages fault 512 times — on some
  // machines most of what filling RAM costs. Not in core dumps; not into a
  // child the agent forks (an exec: transport), which would make every
  // guest write a copy-on-write fault.
  const bool huge = ::madvise(p, size, MADV_HUGEPAGE) == 0;
  ::madvise(p, size, MADV_DONTDUMP);
  ::madvise(p, size, MADV_DONTFORK);
  guest_memory mem{unique_fd{}, static_cast<uint8_t*>(p), size, page_size};
  mem.huge_advised_ = huge;
  return mem;
}

caf::expected<guest_memory> guest_memory::create(const memory_backend& b) {
  if (b.size == 0 || b.size % page_size != 0)
    return make_ferry_error(errc::invalid_argument,
                            "memory size must be a non-zero multiple of 4096 bytes");
  const auto memfd_ram = [&](bool hugetlb, uint64_t huge_size) -> caf::expected<guest_memory> {
    auto fd = make_memfd(b.size, hugetlb, huge_size);
    if (!fd)
      return fd.error();
    const uint64_t backing = backing_page_of(fd->get());
    auto base = map_shared(fd->get(), b.size, backing);
    if (!base)
      return base.error();
    return guest_memory{std::move(*fd), *base, b.size, backing};
  };
  if (b.type == memory_backend::kind::ram) {
    auto mem = b.memfd || b.hugetlb ? memfd_ram(b.hugetlb, b.hugetlb_size) : anonymous(b.size);
    if (mem && b.prefill) {
      mem->fresh_ = true;
      mem->prefill_ =
        std::make_unique<ram_prefill>(mem->base_, mem->size_, mem->fd(), ram_threads());
    }
    return mem;
  }

  const int flags = (b.share ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  unique_fd file{::open(b.mem_path.c_str(), flags)};
  if (!file)
    return make_system_error("cannot open mem-path '" + b.mem_path + "'");
  struct stat st {};
  if (::fstat(file.get(), &st) != 0)
    return make_system_error("fstat(" + b.mem_path + ")");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  const uint64_t backing = backing_page_of(file.get());
  if (auto ok = check_multiple(b.size, backing); !ok)
    return ok.error();

  if (b.share) {
    if (file_size < b.size && ::ftruncate(file.get(), static_cast<off_t>(b.size)) != 0)
      return make_system_error("cannot grow mem-path '" + b.mem_path + "'");
    auto base = map_shared(file.get(), b.size, backing);
    if (!base)
      return base.error();
    guest_memory mem{std::move(file), *base, b.size, backing};
    mem.shared_file_ = true;
    return mem;
  }

  // A private copy of a file on hugetlbfs is in huge pages of its size too.
  auto mem = backing != page_size ? memfd_ram(true, backing) : anonymous(b.size);
  if (!mem)
    return mem.error();
  if (auto ok = load_file(file.get(), file_size, mem->data(), b.size); !ok)
    return ok.error();
  return mem;
}

guest_memory::guest_memory(unique_fd fd, uint8_t* base, uint64_t size, uint64_t backing_page)
  : fd_(std::move(fd)), base_(base), size_(size), backing_page_(backing_page) {}

guest_memory::guest_memory(guest_memory&& other) noexcept
  : fd_(std::move(other.fd_)), base_(std::exchange(other.base_, nullptr)),
    size_(std::exchange(other.size_, 0)), backing_page_(other.backing_page_),
    huge_advised_(other.huge_advised_), shared_file_(other.shared_file_),
    fresh_(std::exchange(other.fresh_, false)), written_runs_(std::move(other.written_runs_)),
    prefill_(std::move(other.prefill_)) {}

guest_memory& guest_memory::operator=(guest_memory&& other) noexcept {
  if (this != &other) {
    prefill_.reset();
    if (base_)
      ::munmap(base_, size_);
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    backing_page_ = other.backing_page_;
    huge_advised_ = other.huge_advised_;
    shared_file_ = other.shared_file_;
    fresh_ = std::exchange(other.fresh_, false);
    written_runs_ = std::move(other.written_runs_);
    prefill_ = std::move(other.prefill_);
  }
  return *this;
}

guest_memory::~guest_memory() {
  prefill_.reset();
  if (base_)
    ::munmap(base_, size_);
}

uint64_t guest_memory::prefilled_bytes() const {
  return prefill_ ? prefill_->done_bytes() : 0;
}

caf::expected<void> guest_memory::read_shared_page(uint64_t pfn, uint8_t* out) const {
  if (!shared_file_ || pfn >= pages())
    return make_ferry_error(errc::invalid_argument, "no shared file page " + std::to_string(pfn));
  return pread_full(fd_.get(), out, page_size, pfn * page_size, "guest RAM's file");
}

void guest_memory::stop_prefill() {
  prefill_.reset();
}

caf::expected<void> guest_memory::discard(uint64_t first_page, uint64_t pages) {
  if (first_page > size_ / page_size || pages > size_ / page_size - first_page)
    return make_ferry_error(errc::invalid_argument, "discard of pages outside guest RAM");
  if ((first_page * page_size) % backing_page_ != 0 || (pages * page_size) % backing_page_ != 0)
    return make_ferry_error(errc::invalid_argument,
                            "guest RAM in huge pages drops whole huge pages only");
  if (!fd_) {
    // Anonymous: no huge page from here on, so a dropped page stays absent
    // (never refilled by a huge fault or khugepaged) until it is placed.
    if (std::exchange(huge_advised_, false))
      ::madvise(base_, size_, MADV_NOHUGEPAGE);
    if (::madvise(base_ + first_page * page_size, pages * page_size, MADV_DONTNEED) != 0)
      return make_system_error("cannot drop pages of guest RAM (madvise)");
    return {};
  }
  // Dropping the pages from the file (memfd, shmem) also unmaps them from
  // every mapping, KVM's included.
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(first_page * page_size),
                  static_cast<off_t>(pages * page_size)) != 0)
    return make_system_error("cannot drop pages of guest RAM (fallocate punch-hole)");
  return {};
}

uint64_t guest_memory::pages() const {
  return size_ / page_size;
}

caf::expected<void> guest_memory::load_boot_sector(std::span<const uint8_t> sector) {
  if (sector.size() > boot_sector_max_bytes)
    return make_ferry_error(errc::invalid_argument, "boot sector larger than 512 bytes");
  if (sector.empty())
    return {};
  auto dst = range(boot_sector_address, sector.size());
  if (dst.empty())
    return make_ferry_error(errc::invalid_argument,
                            "guest RAM too small for a boot sector at 0x7c00");
  if (fresh_)
    written_runs_.emplace_back(boot_sector_address / page_size,
                               (boot_sector_address + sector.size() + page_size - 1) / page_size);
  std::memcpy(dst.data(), sector.data(), sector.size());
  return {};
}

std::span<uint8_t> guest_memory::range(uint64_t addr, uint64_t len) const {
  if (addr > size_ || len > size_ - addr)
    return {};
  return {base_ + addr, len};
}

std::vector<std::pair<uint64_t, uint64_t>> guest_memory::data_runs() const {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  if (fd_) {
    uint64_t at = 0;
    while (at < size_) {
      const off_t d = ::lseek(fd_.get(), static_cast<off_t>(at), SEEK_DATA);
      if (d < 0 || static_cast<uint64_t>(d) >= size_)
        break; // ENXIO: nothing but holes from here
      off_t h = ::lseek(fd_.get(), d, SEEK_HOLE);
      const uint64_t hole = h < 0 ? size_ : std::min(static_cast<uint64_t>(h), size_);
      runs.emplace_back(static_cast<uint64_t>(d) / page_size,
                        std::min((hole + page_size - 1) / page_size, pages()));
      at = hole;
    }
    return runs;
  }
  unique_fd map{::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)};
  constexpr uint64_t batch = 4096; // entries per read
  std::vector<uint64_t> entries(batch);
  const uint64_t base_page = reinterpret_cast<uintptr_t>(base_) / page_size;
  bool in_data = false;
  uint64_t first = 0;
  for (uint64_t p = 0; p < pages(); p += batch) {
    const uint64_t n = std::min(batch, pages() - p);
    const auto want = static_cast<ssize_t>(n * sizeof(uint64_t));
    if (!map || ::pread(map.get(), entries.data(), static_cast<size_t>(want),
                        static_cast<off_t>((base_page + p) * sizeof(uint64_t))) != want) {
      // Cannot tell: all of the rest may hold data.
      runs.emplace_back(in_data ? first : p, pages());
      return runs;
    }
    for (uint64_t i = 0; i < n; ++i) {
      const bool used = (entries[i] & (pagemap_present | pagemap_swapped)) != 0;
      if (used && !in_data)
        first = p + i;
      else if (!used && in_data)
        runs.emplace_back(first, p + i);
      in_data = used;
    }
  }
  if (in_data)
    runs.emplace_back(first, pages());
  return runs;
}

} // namespace ferry
