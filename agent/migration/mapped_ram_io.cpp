#include "agent/migration/mapped_ram_io.hpp"

#include "common/error.hpp"
#include "common/file_io.hpp"
#include "protocol/migration_stream.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace ferry {

namespace {

constexpr uint64_t page = mig::page_size;
// A thread's unit of work: 64 words of 64 pages (16 MiB of RAM).
constexpr size_t stripe_words = 64;
// Neighbouring pages with data go in one call, up to 1 MiB, and so do the
// zero pages of a short gap between two (written as the zeros they are,
// read back as zeros, their bits clear): a guest whose every fourth page is
// zero would otherwise cost a system call per three pages. Longer stretches
// of zero pages stay holes.
constexpr uint64_t max_run = 256;
constexpr uint64_t max_gap = 16;

caf::expected<void> pwrite_all(int fd, const uint8_t* p, uint64_t n, uint64_t at) {
  return pwrite_full(fd, p, n, at, "the mapped-ram file");
}

caf::expected<void> pread_all(int fd, uint8_t* p, uint64_t n, uint64_t at) {
  return pread_full(fd, p, n, at, "the mapped-ram file");
}

bool bit(const std::vector<uint8_t>& bits, uint64_t p) {
  return ((bits[p / 8] >> (p % 8)) & 1) != 0;
}

// Runs `work(first_word, end_word)` for every stripe of `words` words on
// `threads` named threads; the first error wins and stops the others.
template <class Work>
caf::expected<void> in_stripes(size_t words, unsigned threads, const std::atomic<bool>& stop,
                               thread_registry* registry, Work work) {
  threads = std::max(1u, threads);
  std::mutex mtx;
  std::optional<caf::error> failed;
  std::atomic<bool> quit{false};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const auto registered = name_migration_thread(registry, "mig-mapped/" + std::to_string(t));
      for (size_t w0 = t * stripe_words; w0 < words; w0 += threads * stripe_words) {
        if (stop || quit)
          return;
        if (auto ok = work(w0, std::min(words, w0 + stripe_words)); !ok) {
          std::lock_guard lk{mtx};
          if (!failed)
            failed = ok.error();
          quit = true;
          return;
        }
      }
    });
  for (auto& th : pool)
    th.join();
  if (failed)
    return *failed;
  if (stop)
    return make_ferry_error(errc::bad_run_state, "mapped-ram I/O stopped");
  return {};
}

// One writer's share: the pages of `todo` in words [w0, w1).
struct page_writer {
  int fd;
  const mig::mapped_ram_layout& l;
  const uint8_t* ram;
  const dirty_bitmap& todo;
  const dirty_bitmap* known_zero;
  std::vector<uint8_t>& bits; // a writer sets only the bytes of its words
  mig::memory_digest& digest;
  std::atomic<uint64_t>& data;
  std::atomic<uint64_t>& zeros;
  rate_limiter* limiter;
  const std::atomic<bool>& stop;

  caf::expected<void> operator()(size_t w0, size_t w1) const {
    uint64_t run_first = 0, run_len = 0;
    for (size_t w = w0; w < w1; ++w)
      for (uint64_t b = todo.word(w); b != 0; b &= b - 1) {
        const uint64_t p = w * 64 + static_cast<uint64_t>(__builtin_ctzll(b));
        const uint8_t* src = ram + p * page;
        if ((known_zero != nullptr && known_zero->test(p)) || mig::is_zero_page(src)) {
          if (bit(bits, p)) { // data before, zero now: the bitmap disowns it
            bits[p / 8] &= static_cast<uint8_t>(~(1u << (p % 8)));
            digest.forget(p);
          }
          zeros.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        bits[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
        digest.set(p, mig::page_hash(src));
        data.fetch_add(1, std::memory_order_relaxed);
        // The pages between the run and p were looked at and found zero if
        // the pass holds them all: then the run may take them along.
        const uint64_t run_end = run_first + run_len;
        if (run_len != 0 &&
            (p - run_end > max_gap || p + 1 - run_first > max_run || !todo_covers(run_end, p))) {
          if (auto ok = flush(run_first, run_len); !ok)
            return ok;
          run_len = 0;
        }
        if (run_len == 0)
          run_first = p;
        run_len = p + 1 - run_first;
      }
    return flush(run_first, run_len);
  }

  bool todo_covers(uint64_t first, uint64_t end) const {
    for (uint64_t q = first; q < end; ++q)
      if (!todo.test(q))
        return false;
    return true;
  }

  caf::expected<void> flush(uint64_t first, uint64_t n) const {
    if (n == 0)
      return {};
    if (limiter != nullptr)
      limiter->acquire(n * page, stop);
    return pwrite_all(fd, ram + first * page, n * page, l.page_offset(first));
  }
};

// One reader's share: pages [w0 * 64, w1 * 64) of RAM.
struct page_reader {
  int fd;
  const mapped_ram_index& index;
  uint8_t* ram;
  const dirty_bitmap& maybe_data; // pages that may hold something now
  mig::memory_digest& digest;
  std::atomic<uint64_t>& data;
  std::atomic<uint64_t>& zeros;

  caf::expected<void> operator()(size_t w0, size_t w1) const {
    const uint64_t end = std::min<uint64_t>(index.layout.pages(), w1 * 64);
    for (uint64_t p = w0 * 64; p < end;) {
      if (!bit(index.bitmap, p)) {
        uint8_t* dst = ram + p * page;
        if (maybe_data.test(p) && !mig::is_zero_page(dst))
          std::memset(dst, 0, page);
        zeros.fetch_add(1, std::memory_order_relaxed);
        ++p;
        continue;
      }
      // Pages with data in one read, over short gaps of pages the bitmap
      // disowns (zeroed after the read).
      uint64_t n = 1;
      for (uint64_t q = p + 1; q < end && q + 1 - p <= max_run && q - (p + n) <= max_gap; ++q)
        if (bit(index.bitmap, q))
          n = q + 1 - p;
      if (auto ok = pread_all(fd, ram + p * page, n * page, index.layout.page_offset(p)); !ok)
        return ok;
      for (uint64_t i = p; i < p + n; ++i) {
        if (!bit(index.bitmap, i)) {
          // Read along with its neighbours: zeros, or stale data a later
          // pass disowned, which must not stay.
          uint8_t* dst = ram + i * page;
          if (!mig::is_zero_page(dst))
            std::memset(dst, 0, page);
          zeros.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        digest.set(i, mig::page_hash(ram + i * page));
        data.fetch_add(1, std::memory_order_relaxed);
      }
      p += n;
    }
    return {};
  }
};

} // namespace

caf::expected<mapped_ram_totals>
write_mapped_ram(int fd, const mig::mapped_ram_layout& l, const guest_memory& mem,
                 const dirty_bitmap& todo, const dirty_bitmap* known_zero,
                 std::vector<uint8_t>& bits, mig::memory_digest& digest,
                 const std::atomic<bool>& stop, const mapped_ram_writes& how) {
  std::atomic<uint64_t> data{0}, zeros{0};
  const page_writer writer{fd,     l,    mem.data(), todo,        known_zero, bits,
                           digest, data, zeros,      how.limiter, stop};
  if (auto ok = in_stripes(todo.word_count(), how.threads, stop, how.registry, writer); !ok)
    return ok.error();
  return mapped_ram_totals{data.load(), zeros.load()};
}

caf::expected<void> finish_mapped_ram(int fd, const mig::mapped_ram_layout& l,
                                      const std::vector<uint8_t>& bits) {
  if (auto w = pwrite_all(fd, bits.data(), bits.size(), l.bitmap_offset); !w)
    return w;
  const auto header = mig::encode_mapped_ram_header(l);
  return pwrite_all(fd, header.data(), header.size(), 0);
}

caf::expected<mapped_ram_index> read_mapped_ram_index(int fd, uint64_t ram_size) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_system_error("fstat(mapped-ram file)");
  std::vector<uint8_t> block(mig::mapped_ram_block);
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < block.size())
    return make_ferry_error(errc::invalid_argument,
                            "mapped-ram file: " + std::to_string(file_size) +
                              " bytes, too short for its header");
  if (auto r = pread_all(fd, block.data(), block.size(), 0); !r)
    return r.error();
  FERRY_TRY(layout, mig::decode_mapped_ram_header(block, ram_size, file_size));
  mapped_ram_index index{layout, std::vector<uint8_t>(layout.bitmap_bytes())};
  if (auto r = pread_all(fd, index.bitmap.data(), index.bitmap.size(), layout.bitmap_offset); !r)
    return r.error();
  if (auto ok = mig::check_mapped_ram_bitmap(layout, index.bitmap); !ok)
    return ok.error();
  return index;
}

caf::expected<mapped_ram_totals> read_mapped_ram(int fd, const mapped_ram_index& index,
                                                 guest_memory& mem, unsigned threads,
                                                 mig::memory_digest& digest,
                                                 const std::atomic<bool>& stop,
                                                 thread_registry* registry) {
  const uint64_t pages = index.layout.pages();
  // Fresh RAM reads zero but where the agent wrote since it was made (the
  // boot sector): only those pages need looking at. Other RAM (a file's
  // copy) may hold anything.
  dirty_bitmap maybe_data{pages};
  if (!mem.take_fresh_runs([&](uint64_t first, uint64_t end) {
        for (uint64_t p = first; p < end && p < pages; ++p)
          maybe_data.set(p);
      }))
    maybe_data.set_all();
  std::atomic<uint64_t> data{0}, zeros{0};
  const page_reader reader{fd, index, mem.data(), maybe_data, digest, data, zeros};
  if (auto ok = in_stripes(maybe_data.word_count(), threads, stop, registry, reader); !ok)
    return ok.error();
  return mapped_ram_totals{data.load(), zeros.load()};
}

} // namespace ferry
