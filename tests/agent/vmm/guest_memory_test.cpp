#include "agent/vmm/guest_memory.hpp"
#include "common/error.hpp"
#include "tests/support/huge_pages.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

using namespace ferry;

namespace {

struct temp_file {
  std::string path;
  explicit temp_file(const std::vector<uint8_t>& content) {
    char tmpl[] = "/tmp/ferry-mem-XXXXXX";
    int fd = ::mkstemp(tmpl);
    path = tmpl;
    EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    ::close(fd);
  }
  ~temp_file() { ::unlink(path.c_str()); }
  std::vector<uint8_t> read() const {
    std::ifstream in{path, std::ios::binary};
    return {std::istreambuf_iterator<char>(in), {}};
  }
};

std::vector<uint8_t> bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

} // namespace

TEST(guest_memory, memfd_backend_is_a_zeroed_memfd) {
  memory_backend backend;
  backend.size = 1 << 20;
  backend.memfd = true;
  auto mem = guest_memory::create(backend);
  ASSERT_TRUE(mem) << describe(mem.error());
  EXPECT_EQ(mem->size(), 1U << 20);
  EXPECT_EQ(mem->pages(), 256U);
  EXPECT_GE(mem->fd(), 0);
  for (size_t i = 0; i < mem->size(); i += 4096)
    ASSERT_EQ(mem->data()[i], 0);
  // The fd is the memory: what we write through the mapping reads back via fd.
  mem->data()[12345] = 0xab;
  uint8_t b = 0;
  ASSERT_EQ(::pread(mem->fd(), &b, 1, 12345), 1);
  EXPECT_EQ(b, 0xab);
}

TEST(guest_memory, file_backend_share_off_is_a_private_copy) {
  const auto content = bytes(size_t{64} * 1024, 3);
  temp_file f{content};
  auto mem =
    guest_memory::create({memory_backend::kind::file, uint64_t{128} * 1024, f.path, false});
  ASSERT_TRUE(mem) << describe(mem.error());
  EXPECT_EQ(std::memcmp(mem->data(), content.data(), content.size()), 0);
  // Beyond the file's end the guest sees zeros.
  for (size_t i = content.size(); i < mem->size(); ++i)
    ASSERT_EQ(mem->data()[i], 0) << i;
  mem->data()[10] ^= 0xff;
  EXPECT_EQ(f.read(), content) << "share=off must not write the file";
}

TEST(guest_memory, file_backend_share_on_writes_through_and_grows_the_file) {
  const auto content = bytes(8192, 9);
  temp_file f{content};
  {
    auto mem = guest_memory::create({memory_backend::kind::file, 16384, f.path, true});
    ASSERT_TRUE(mem) << describe(mem.error());
    EXPECT_EQ(std::memcmp(mem->data(), content.data(), content.size()), 0);
    mem->data()[100] = 0x5a;
  }
  const auto after = f.read();
  ASSERT_EQ(after.size(), 16384U);
  EXPECT_EQ(after[100], 0x5a);
  EXPECT_EQ(after[101], content[101]);
}

TEST(guest_memory, sparse_file_reads_holes_as_zero) {
  temp_file f{{}};
  {
    std::ofstream out{f.path, std::ios::binary};
    out.seekp(1 << 20);
    out.put('x');
  }
  auto mem = guest_memory::create({memory_backend::kind::file, 2 << 20, f.path, false});
  ASSERT_TRUE(mem) << describe(mem.error());
  EXPECT_EQ(mem->data()[1 << 20], 'x');
  EXPECT_EQ(mem->data()[(1 << 20) - 1], 0);
}

// A big share=off file loads in slices on several threads: every page lands
// where it belongs, holes (one across the slices' boundary) and the RAM
// beyond the file's end read as zero.
TEST(guest_memory, a_large_file_loads_in_slices_page_for_page) {
  constexpr size_t page = 4096;
  constexpr size_t file_pages = size_t{40} * 256; // 40 MiB: more than one slice
  temp_file f{{}};
  {
    std::ofstream out{f.path, std::ios::binary};
    for (size_t p = 0; p < file_pages; ++p) {
      const bool hole = (p >= 4000 && p < 6000) || p % 97 == 5;
      if (hole)
        continue;
      std::vector<char> data(page, static_cast<char>(p * 31 + 7));
      std::memcpy(data.data(), &p, sizeof p);
      out.seekp(static_cast<std::streamoff>(p * page));
      out.write(data.data(), page);
    }
  }
  const uint64_t ram = uint64_t{48} << 20;
  auto mem = guest_memory::create({memory_backend::kind::file, ram, f.path, false});
  ASSERT_TRUE(mem) << describe(mem.error());
  for (size_t p = 0; p < ram / page; ++p) {
    const uint8_t* at = mem->data() + p * page;
    const bool data = p < file_pages && !((p >= 4000 && p < 6000) || p % 97 == 5);
    if (!data) {
      ASSERT_TRUE(std::all_of(at, at + page, [](uint8_t b) { return b == 0; })) << p;
      continue;
    }
    size_t tag = 0;
    std::memcpy(&tag, at, sizeof tag);
    ASSERT_EQ(tag, p);
    ASSERT_EQ(at[page - 1], static_cast<uint8_t>(p * 31 + 7)) << p;
  }
}

TEST(guest_memory, bad_requests_are_errors) {
  auto zero = guest_memory::create({memory_backend::kind::ram, 0, {}, false});
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error(), errc::invalid_argument);
  auto odd = guest_memory::create({memory_backend::kind::ram, 4097, {}, false});
  ASSERT_FALSE(odd);
  auto missing =
    guest_memory::create({memory_backend::kind::file, 4096, "/nonexistent/ferry", false});
  ASSERT_FALSE(missing);
  EXPECT_NE(describe(missing.error()).find("/nonexistent/ferry"), std::string::npos);
}

TEST(guest_memory, range_is_bounds_checked) {
  auto mem = guest_memory::create({memory_backend::kind::ram, 8192, {}, false});
  ASSERT_TRUE(mem);
  EXPECT_EQ(mem->range(0, 8192).size(), 8192U);
  EXPECT_EQ(mem->range(8192, 0).size(), 0U);
  EXPECT_TRUE(mem->range(8000, 193).empty());
  EXPECT_TRUE(mem->range(UINT64_MAX, 2).empty());
}

TEST(guest_memory, boot_sector_goes_to_0x7c00_and_is_bounded) {
  auto mem = guest_memory::create({memory_backend::kind::ram, uint64_t{64} * 1024, {}, false});
  ASSERT_TRUE(mem);
  const auto sector = bytes(512, 1);
  ASSERT_TRUE(mem->load_boot_sector(sector));
  EXPECT_EQ(std::memcmp(mem->data() + 0x7c00, sector.data(), sector.size()), 0);
  EXPECT_EQ(mem->data()[0x7c00 - 1], 0);
  EXPECT_EQ(mem->data()[0x7e00], 0);
  auto big = mem->load_boot_sector(bytes(513, 1));
  ASSERT_FALSE(big);
  EXPECT_EQ(describe(big.error()), "boot sector larger than 512 bytes");
  auto tiny = guest_memory::create({memory_backend::kind::ram, 4096, {}, false});
  ASSERT_TRUE(tiny);
  auto none = tiny->load_boot_sector(sector);
  ASSERT_FALSE(none);
  EXPECT_EQ(describe(none.error()), "guest RAM too small for a boot sector at 0x7c00");
  EXPECT_TRUE(tiny->load_boot_sector({})) << "no drive, nothing to load";
}

// An incoming guest's RAM is populated in the background while pages land
// in it: what was written stays written, the rest reads zero, and the
// destination is told once that nothing needs scanning.
TEST(guest_memory, prefill_populates_behind_writes_without_changing_them) {
  memory_backend b;
  b.size = uint64_t{256} << 20;
  b.prefill = true;
  auto mem = guest_memory::create(b);
  ASSERT_TRUE(mem) << describe(mem.error());
  // Writes racing the workers: every 7th page, from the far end inwards.
  const uint64_t pages = mem->pages();
  for (uint64_t p = pages; p-- > 0;)
    if (p % 7 == 0)
      std::memset(mem->data() + p * 4096, static_cast<int>(p % 251) + 1, 4096);
  for (int i = 0; i < 1000 && mem->prefilled_bytes() < b.size; ++i)
    ::usleep(10'000);
  EXPECT_EQ(mem->prefilled_bytes(), b.size);
  for (uint64_t p = 0; p < pages; ++p) {
    const uint8_t want = p % 7 == 0 ? static_cast<uint8_t>(p % 251 + 1) : 0;
    const uint8_t* page = mem->data() + p * 4096;
    ASSERT_TRUE(std::all_of(page, page + 4096, [&](uint8_t c) { return c == want; }))
      << "page " << p;
  }
  uint64_t fresh_runs = 0;
  EXPECT_TRUE(mem->take_fresh_runs([&](uint64_t, uint64_t) { ++fresh_runs; }));
  EXPECT_EQ(fresh_runs, 0U) << "the agent wrote nothing into it";
  EXPECT_FALSE(mem->take_fresh_runs([](uint64_t, uint64_t) {}))
    << "only the first incoming may skip the scan";
  // Populated pages are data to the scan (which stays correct, if slower).
  uint64_t runs_pages = 0;
  mem->for_each_data_run([&](uint64_t first, uint64_t end) { runs_pages += end - first; });
  EXPECT_EQ(runs_pages, pages);
}

TEST(guest_memory, fresh_runs_name_what_the_agent_wrote) {
  memory_backend b;
  b.size = uint64_t{1} << 20;
  b.prefill = true;
  auto mem = guest_memory::create(b);
  ASSERT_TRUE(mem);
  const std::vector<uint8_t> sector(512, 0xaa);
  ASSERT_TRUE(mem->load_boot_sector(sector));
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  EXPECT_TRUE(mem->take_fresh_runs([&](uint64_t f, uint64_t e) { runs.emplace_back(f, e); }));
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(runs[0], std::make_pair(uint64_t{7}, uint64_t{8})) << "the page at 0x7c00";
  memory_backend plain;
  plain.size = uint64_t{1} << 20;
  auto other = guest_memory::create(plain);
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->take_fresh_runs([](uint64_t, uint64_t) {}))
    << "RAM not made for an incoming migration";
  EXPECT_EQ(other->prefilled_bytes(), 0U);
}

// memory-backend-memfd,hugetlb=on: RAM in 2 MiB pages, reserved whole at
// creation; dropping pages works in whole huge pages only; an incoming
// guest's prefill populates it like base pages.
TEST(guest_memory, hugetlb_ram_is_in_huge_pages_reserved_at_creation) {
  ferry::test::huge_page_reservation reserve{8};
  if (!reserve.unavailable_reason().empty())
    GTEST_SKIP() << reserve.unavailable_reason();
  memory_backend b;
  b.size = uint64_t{8} << 20;
  b.hugetlb = true;
  b.prefill = true;
  auto mem = guest_memory::create(b);
  ASSERT_TRUE(mem) << describe(mem.error());
  EXPECT_EQ(mem->backing_page_size(), uint64_t{2} << 20);
  EXPECT_EQ(mem->pages(), 2048U) << "4 KiB pages are what Ferry counts in";
  std::memset(mem->data() + (uint64_t{3} << 20), 0x5a, 4096);
  for (int i = 0; i < 1000 && mem->prefilled_bytes() < b.size; ++i)
    ::usleep(10'000);
  EXPECT_EQ(mem->prefilled_bytes(), b.size);
  EXPECT_EQ(mem->data()[(uint64_t{3} << 20) + 4095], 0x5a);
  EXPECT_EQ(mem->data()[(uint64_t{3} << 20) + 4096], 0);

  const auto part = mem->discard(768, 1);
  ASSERT_FALSE(part);
  EXPECT_NE(describe(part.error()).find("whole huge pages"), std::string::npos);
  ASSERT_TRUE(mem->discard(512, 512)) << "the second huge page, whole";
  EXPECT_EQ(mem->data()[uint64_t{3} << 20], 0) << "dropped pages read zero";

  // A backend larger than the free pages fails at creation with the reason.
  memory_backend too_big = b;
  too_big.prefill = false;
  too_big.size = (ferry::test::free_huge_pages() + 1) * (uint64_t{2} << 20);
  auto none = guest_memory::create(too_big);
  ASSERT_FALSE(none);
  EXPECT_NE(describe(none.error()).find("not enough free huge pages"), std::string::npos)
    << describe(none.error());
}

TEST(guest_memory, hugetlb_size_must_be_a_multiple_of_the_huge_page) {
  memory_backend b;
  b.size = uint64_t{3} << 20;
  b.hugetlb = true;
  auto mem = guest_memory::create(b);
  ASSERT_FALSE(mem);
  const std::string why = describe(mem.error());
  if (why.find("offers no huge pages") != std::string::npos)
    GTEST_SKIP() << why;
  EXPECT_NE(why.find("not a multiple of the backend's page size 2097152"), std::string::npos)
    << why;
  b.size = uint64_t{4} << 20;
  b.hugetlb_size = uint64_t{1} << 16; // 64 KiB: no such huge page on x86
  auto odd = guest_memory::create(b);
  ASSERT_FALSE(odd);
  EXPECT_NE(describe(odd.error()).find("offers no huge pages of that size"), std::string::npos)
    << describe(odd.error());
}

// Private RAM is anonymous memory: no fd; the scan finds the pages written
// (pagemap), dropping pages makes them read zero and leaves the scan.
TEST(guest_memory, ram_backend_is_anonymous_and_scans_what_was_written) {
  auto mem = guest_memory::create({memory_backend::kind::ram, 16 << 20, {}, false});
  ASSERT_TRUE(mem) << describe(mem.error());
  EXPECT_EQ(mem->fd(), -1);
  for (size_t i = 0; i < mem->size(); i += 4096)
    ASSERT_EQ(mem->data()[i], 0);
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  mem->for_each_data_run([&](uint64_t f, uint64_t e) { runs.emplace_back(f, e); });
  uint64_t data_pages = 0;
  for (const auto& [f, e] : runs)
    data_pages += e - f;
  // Reading untouched pages maps the shared zero page (present to pagemap,
  // so counted as data: harmless, the scan finds them zero).
  EXPECT_LE(data_pages, mem->pages());
  ASSERT_TRUE(mem->discard(0, mem->pages()));
  runs.clear();
  mem->for_each_data_run([&](uint64_t f, uint64_t e) { runs.emplace_back(f, e); });
  EXPECT_TRUE(runs.empty()) << runs.size() << " runs after dropping everything";
  std::memset(mem->data() + 5 * size_t{4096}, 1, 4096);
  std::memset(mem->data() + 100 * size_t{4096}, 2, 3 * size_t{4096});
  runs.clear();
  mem->for_each_data_run([&](uint64_t f, uint64_t e) { runs.emplace_back(f, e); });
  const std::vector<std::pair<uint64_t, uint64_t>> want{{5, 6}, {100, 103}};
  EXPECT_EQ(runs, want) << "after the drop no huge page refills its neighbours";
  ASSERT_TRUE(mem->discard(100, 1));
  EXPECT_EQ(mem->data()[100 * size_t{4096}], 0);
  EXPECT_EQ(mem->data()[101 * size_t{4096}], 2);
}
