// Ferry's qcow2 reader and writer against QEMU's own tools as the oracle:
// images made and written by qemu-img/qemu-io read the same through Ferry;
// snapshots Ferry takes, reverts and deletes are listed by `qemu-img
// snapshot -l` and leave `qemu-img check` clean; bad images are refused with
// a reason and left byte for byte as they were.

#include "agent/block/qcow2_image.hpp"
#include "common/error.hpp"
#include "tests/support/process.hpp"
#include "tests/support/qemu_img.hpp"
#include "tests/support/temp_dir.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

using namespace ferry;
using namespace ferry::test;

namespace {

const std::string qemu_io_bin = "/usr/bin/qemu-io";
bool have_qemu_io() {
  return ::access(qemu_io_bin.c_str(), X_OK) == 0;
}

#define NEED_QEMU_TOOLS()                                                                          \
  do {                                                                                             \
    if (!have_qemu_img() || !have_qemu_io())                                                       \
      GTEST_SKIP() << "qemu-img and qemu-io (Debian qemu-utils) are the oracle; not installed";    \
  } while (0)

struct qcow2_file : ::testing::Test {
  temp_dir dir;
  std::string img = dir.file("disk.qcow2");

  void sh(const std::vector<std::string>& argv) {
    auto r = run(argv);
    ASSERT_EQ(r.status, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": "
                           << r.output;
  }
  // A 4 MiB disk with a pattern QEMU wrote in three places.
  void make_image(const std::string& extra_opts = "") {
    std::vector<std::string> create{qemu_img_path, "create", "-q", "-f", "qcow2"};
    if (!extra_opts.empty())
      create.insert(create.end(), {"-o", extra_opts});
    create.insert(create.end(), {img, "4M"});
    sh(create);
    qemu_io("write -P 0x5a 0 64k");
    qemu_io("write -P 0xa5 1M 128k");
    qemu_io("write -P 0x33 4032k 64k");
  }
  void qemu_io(const std::string& cmd) { sh({qemu_io_bin, "-f", "qcow2", "-c", cmd, img}); }
  bool qemu_io_ok(const std::string& cmd) {
    auto r = run({qemu_io_bin, "-f", "qcow2", "-c", cmd, img});
    return r.status == 0 && r.output.find("Pattern verification failed") == std::string::npos;
  }
  std::string check() {
    auto r = run({qemu_img_path, "check", img});
    EXPECT_EQ(r.status, 0) << r.output;
    return r.output;
  }
  std::string list() { return run({qemu_img_path, "snapshot", "-l", img}).output; }
  std::vector<uint8_t> raw_disk() {
    const std::string raw = dir.file("disk.raw");
    sh({qemu_img_path, "convert", "-f", "qcow2", "-O", "raw", img, raw});
    std::ifstream in{raw, std::ios::binary};
    return {std::istreambuf_iterator<char>(in), {}};
  }
  std::vector<uint8_t> file_bytes() {
    std::ifstream in{img, std::ios::binary};
    return {std::istreambuf_iterator<char>(in), {}};
  }
  // A file of `n` bytes of VM state, each byte its offset's hash.
  int vmstate(uint64_t n) {
    const std::string p = dir.file("vmstate");
    int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    std::vector<uint8_t> b(n);
    for (uint64_t i = 0; i < n; ++i)
      b[i] = static_cast<uint8_t>((i * 2654435761U) >> 13);
    EXPECT_EQ(::pwrite(fd, b.data(), n, 0), static_cast<ssize_t>(n));
    return fd;
  }
  static std::vector<uint8_t> read_all(int fd, uint64_t n) {
    std::vector<uint8_t> b(n);
    EXPECT_EQ(::pread(fd, b.data(), n, 0), static_cast<ssize_t>(n));
    return b;
  }
  std::unique_ptr<qcow2::image> open(bool writable) {
    auto i = qcow2::image::open(img, writable);
    EXPECT_TRUE(i) << describe(i.error());
    return i ? std::move(*i) : nullptr;
  }
};

} // namespace

TEST_F(qcow2_file, reads_what_qemu_wrote_byte_for_byte) {
  NEED_QEMU_TOOLS();
  make_image();
  const auto want = raw_disk();
  for (const char* opts : {"", "compat=0.10", "cluster_size=4096"}) {
    SCOPED_TRACE(opts);
    if (*opts != 0) {
      std::remove(img.c_str());
      make_image(opts);
    }
    auto i = open(false);
    ASSERT_TRUE(i);
    ASSERT_EQ(i->size(), 4U << 20);
    std::vector<uint8_t> got(i->size());
    auto ok = i->read(0, got);
    ASSERT_TRUE(ok) << describe(ok.error());
    EXPECT_TRUE(got == want) << "the disk as qemu-img converts it";
    // A read across cluster boundaries at an odd offset.
    std::vector<uint8_t> part(100000);
    ASSERT_TRUE(i->read(1000000, part));
    EXPECT_TRUE(std::equal(part.begin(), part.end(), want.begin() + 1000000));
    EXPECT_FALSE(i->read(i->size() - 10, part)) << "past the end";
  }
}

TEST_F(qcow2_file, a_snapshot_is_listed_by_qemu_img_and_the_image_checks_clean) {
  NEED_QEMU_TOOLS();
  make_image();
  const uint64_t vm_bytes = 3 * 65536 + 123; // not a whole number of clusters
  const int vm = vmstate(vm_bytes);
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    auto ok = i->create_snapshot("before", vm, vm_bytes, 42'000'000);
    ASSERT_TRUE(ok) << describe(ok.error());
    auto again = i->create_snapshot("before", vm, vm_bytes, 0);
    ASSERT_FALSE(again);
    EXPECT_NE(describe(again.error()).find("already exists"), std::string::npos);
  }
  const std::string l = list();
  EXPECT_NE(l.find("before"), std::string::npos) << l;
  EXPECT_NE(l.find("192 KiB"), std::string::npos) << "VM SIZE column\n" << l;
  EXPECT_NE(check().find("No errors were found"), std::string::npos);
  // The disk as it was is still QEMU's to read and write; the snapshot keeps
  // the old data (copy on write works: the COPIED flags are right).
  qemu_io("write -P 0x77 0 64k");
  EXPECT_NE(check().find("No errors were found"), std::string::npos);
  EXPECT_TRUE(qemu_io_ok("read -P 0x77 0 64k"));
  {
    auto i = open(false);
    ASSERT_TRUE(i);
    ASSERT_EQ(i->snapshots().size(), 1U);
    EXPECT_EQ(i->snapshots()[0].name, "before");
    EXPECT_EQ(i->snapshots()[0].id, "1");
    EXPECT_EQ(i->snapshots()[0].vm_state_size, vm_bytes);
    EXPECT_EQ(i->snapshots()[0].vm_clock_nsec, 42'000'000U);
    const std::string out = dir.file("vmstate.out");
    int fd = ::open(out.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    auto ok = i->read_vmstate("before", fd);
    ASSERT_TRUE(ok) << describe(ok.error());
    EXPECT_TRUE(read_all(fd, vm_bytes) == read_all(vm, vm_bytes)) << "the VM state read back";
    ::close(fd);
  }
  // QEMU's own goto of Ferry's snapshot brings the old disk back.
  sh({qemu_img_path, "snapshot", "-a", "before", img});
  EXPECT_TRUE(qemu_io_ok("read -P 0x5a 0 64k"));
  EXPECT_NE(check().find("No errors were found"), std::string::npos);
  ::close(vm);
}

TEST_F(qcow2_file, revert_brings_the_disk_back_and_delete_leaves_it_clean) {
  NEED_QEMU_TOOLS();
  make_image();
  const int vm = vmstate(1000);
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    ASSERT_TRUE(i->create_snapshot("one", vm, 1000, 0));
    ASSERT_TRUE(i->create_snapshot("two", vm, 0, 0));
  }
  qemu_io("write -P 0x11 0 64k");
  qemu_io("write -P 0x22 2M 64k");
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    auto ok = i->revert_to("one");
    ASSERT_TRUE(ok) << describe(ok.error());
    EXPECT_FALSE(i->revert_to("none"));
  }
  EXPECT_NE(check().find("No errors were found"), std::string::npos);
  EXPECT_TRUE(qemu_io_ok("read -P 0x5a 0 64k"));
  EXPECT_TRUE(qemu_io_ok("read -P 0 2M 64k"));
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    auto ok = i->delete_snapshot("one");
    ASSERT_TRUE(ok) << describe(ok.error());
    EXPECT_FALSE(i->delete_snapshot("one")) << "gone already";
  }
  std::string l = list();
  EXPECT_EQ(l.find("one"), std::string::npos) << l;
  EXPECT_NE(l.find("two"), std::string::npos) << l;
  std::string c = check();
  EXPECT_NE(c.find("No errors were found"), std::string::npos) << c;
  EXPECT_EQ(c.find("leaked"), std::string::npos) << c;
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    ASSERT_TRUE(i->delete_snapshot("two"));
  }
  c = check();
  EXPECT_EQ(c.find("leaked"), std::string::npos) << c;
  EXPECT_EQ(list(), "") << "no snapshot left";
  ::close(vm);
}

TEST_F(qcow2_file, snapshots_qemu_took_are_read_and_deleted) {
  NEED_QEMU_TOOLS();
  make_image();
  sh({qemu_img_path, "snapshot", "-c", "q1", img});
  qemu_io("write -P 0x44 0 64k");
  sh({qemu_img_path, "snapshot", "-c", "q2", img});
  auto i = open(true);
  ASSERT_TRUE(i);
  ASSERT_EQ(i->snapshots().size(), 2U);
  EXPECT_EQ(i->snapshots()[1].name, "q2");
  ASSERT_TRUE(i->revert_to("q1"));
  ASSERT_TRUE(i->delete_snapshot("q1"));
  i.reset();
  EXPECT_TRUE(qemu_io_ok("read -P 0x5a 0 64k"));
  const std::string c = check();
  EXPECT_EQ(c.find("leaked"), std::string::npos) << c;
  EXPECT_EQ(list().find("q1"), std::string::npos);
}

TEST_F(qcow2_file, bad_images_are_refused_with_a_reason_and_left_as_they_were) {
  NEED_QEMU_TOOLS();
  make_image();
  const auto good = file_bytes();
  struct variant {
    const char* name;
    size_t at;
    std::vector<uint8_t> bytes;
    const char* says;
    size_t truncate = 0;
  };
  const std::vector<variant> variants = {
    {"bad magic", 0, {'Q', 'F', 'I', 0}, "not a qcow2"},
    {"version 4", 4, {0, 0, 0, 4}, "version 4"},
    {"backing file", 8, {0, 0, 0, 0, 0, 0, 0x10, 0}, "backing files"},
    {"cluster bits 30", 20, {0, 0, 0, 30}, "cluster_bits"},
    {"encrypted", 32, {0, 0, 0, 1}, "encrypted"},
    {"L1 past the end", 40, {0, 0, 0, 0x10, 0, 0, 0, 0}, "L1 table"},
    {"huge L1", 36, {0x7f, 0xff, 0xff, 0xff}, "too large"},
    {"refcount table past the end", 48, {0, 0, 0, 0x10, 0, 0, 0, 0}, "refcount table"},
    {"snapshots past the end", 60, {0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0, 0}, "snapshot table"},
    {"unknown incompatible feature", 72, {0, 0, 0, 0, 0, 0, 1, 0}, "unknown incompatible"},
    {"external data file", 79, {4}, "external data"},
    {"truncated", 0, {}, "shorter than", 50},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    auto bytes = good;
    std::copy(v.bytes.begin(), v.bytes.end(), bytes.begin() + static_cast<ptrdiff_t>(v.at));
    if (v.truncate != 0)
      bytes.resize(v.truncate);
    {
      std::ofstream out{img, std::ios::binary | std::ios::trunc};
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
    }
    auto i = qcow2::image::open(img, true);
    ASSERT_FALSE(i);
    EXPECT_NE(describe(i.error()).find(v.says), std::string::npos) << describe(i.error());
    EXPECT_TRUE(file_bytes() == bytes) << "nothing written";
  }
}

TEST_F(qcow2_file, compressed_clusters_and_dirty_images_are_refused_clearly) {
  NEED_QEMU_TOOLS();
  make_image();
  const std::string plain = dir.file("plain.qcow2");
  sh({qemu_img_path, "convert", "-c", "-f", "qcow2", "-O", "qcow2", img, plain});
  img = plain;
  const auto before = file_bytes();
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    std::vector<uint8_t> b(4096);
    auto r = i->read(0, b);
    ASSERT_FALSE(r);
    EXPECT_NE(describe(r.error()).find("compressed clusters"), std::string::npos);
    auto s = i->create_snapshot("x", -1, 0, 0);
    ASSERT_FALSE(s);
    EXPECT_NE(describe(s.error()).find("compressed clusters"), std::string::npos);
  }
  EXPECT_TRUE(file_bytes() == before) << "a refused snapshot writes nothing";
  // Lazy refcounts left dirty: readable, never written.
  auto bytes = before;
  bytes[79] |= 1;
  {
    std::ofstream out{img, std::ios::binary | std::ios::trunc};
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_TRUE(qcow2::image::open(img, false));
  auto w = qcow2::image::open(img, true);
  ASSERT_FALSE(w);
  EXPECT_NE(describe(w.error()).find("qemu-img check -r all"), std::string::npos);
}

TEST_F(qcow2_file, an_image_larger_than_one_refcount_block_gets_new_blocks) {
  NEED_QEMU_TOOLS();
  // 512-byte clusters: one refcount block covers 256 clusters (128 KiB), so
  // a 300 KiB VM state needs new refcount blocks made on the way.
  sh({qemu_img_path, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "1M"});
  qemu_io("write -P 0x5a 0 64k");
  const uint64_t n = uint64_t{300} * 1024;
  const int vm = vmstate(n);
  {
    auto i = open(true);
    ASSERT_TRUE(i);
    auto ok = i->create_snapshot("big", vm, n, 0);
    ASSERT_TRUE(ok) << describe(ok.error());
  }
  std::string c = check();
  EXPECT_NE(c.find("No errors were found"), std::string::npos) << c;
  auto i = open(true);
  ASSERT_TRUE(i);
  const std::string out = dir.file("vmstate.out");
  int fd = ::open(out.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_TRUE(i->read_vmstate("big", fd));
  EXPECT_TRUE(read_all(fd, n) == read_all(vm, n));
  ASSERT_TRUE(i->delete_snapshot("big"));
  i.reset();
  c = check();
  EXPECT_EQ(c.find("leaked"), std::string::npos) << c;
  ::close(fd);
  ::close(vm);
}
