#include "agent/cli/vm_config.hpp"
#include "common/error.hpp"

#include <gtest/gtest.h>

using namespace ferry;

namespace {

caf::expected<vm_config> parse(const std::vector<std::string>& words) {
  return parse_vm_args(words);
}

std::string error_of(const std::vector<std::string>& words) {
  auto c = parse(words);
  return c ? std::string{"<parsed>"} : describe(c.error());
}

} // namespace

TEST(vm_config, the_brief_command_line) {
  auto c = parse({"-name",    "vm1",
                  "-m",       "1024M",
                  "-smp",     "2",
                  "-uuid",    "12345678-1234-1234-1234-123456789abc",
                  "-drive",   "file=/tmp/g.img,format=raw",
                  "-object",  "memory-backend-file,id=ram0,size=1024M,mem-path=/tmp/ram,share=on",
                  "-machine", "memory-backend=ram0",
                  "-qmp",     "unix:/tmp/q.sock,server=on,wait=off",
                  "-qmp",     "tcp:127.0.0.1:4444,server=on,wait=off",
                  "-serial",  "file:/tmp/s.txt"});
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->name, "vm1");
  EXPECT_EQ(c->ram_size, 1U << 30);
  EXPECT_EQ(c->smp, 2U);
  EXPECT_EQ(c->drive, "/tmp/g.img");
  EXPECT_EQ(c->backend.type, memory_backend::kind::file);
  EXPECT_EQ(c->backend.mem_path, "/tmp/ram");
  EXPECT_TRUE(c->backend.share);
  ASSERT_EQ(c->qmp.size(), 2U);
  EXPECT_EQ(c->qmp[0].type, endpoint::kind::unix_socket);
  EXPECT_EQ(c->qmp[0].path, "/tmp/q.sock");
  EXPECT_EQ(c->qmp[1].type, endpoint::kind::tcp);
  EXPECT_EQ(c->qmp[1].port, 4444);
  EXPECT_EQ(c->serial, vm_config::serial_kind::file);
  EXPECT_EQ(c->serial_path, "/tmp/s.txt");
  EXPECT_EQ(c->accel, vm_config::accel_kind::kvm);
}

TEST(vm_config, disks_in_every_form_qemu_and_libvirt_write_keep_their_order) {
  const std::string json_blockdev = R"({"driver":"qcow2","node-name":"d2","read-only":true,)"
                                    R"("file":{"driver":"file","filename":"/img/two.qcow2"}})";
  auto c = parse({"-drive", "file=/img/boot.qcow2,format=qcow2,node-name=boot,if=none", "-blockdev",
                  "driver=file,node-name=f1,filename=/img/data.raw", "-blockdev", json_blockdev,
                  "-blockdev", "driver=file,node-name=f3,filename=/img/three.qcow2", "-blockdev",
                  "driver=qcow2,node-name=d3,file=f3", "-drive", "file=/img/probe.img"});
  ASSERT_TRUE(c) << describe(c.error());
  ASSERT_EQ(c->drives.size(), 5U);
  const auto at = [&](size_t i) { return c->drives[i]; };
  EXPECT_EQ(at(0).node_name, "boot");
  EXPECT_EQ(at(0).format, "qcow2");
  EXPECT_EQ(c->drive, "/img/boot.qcow2") << "the first disk boots";
  EXPECT_EQ(at(1).node_name, "f1") << "a file node no format node uses is a raw disk";
  EXPECT_EQ(at(1).format, "raw");
  EXPECT_EQ(at(2).node_name, "d2");
  EXPECT_EQ(at(2).path, "/img/two.qcow2");
  EXPECT_TRUE(at(2).read_only);
  EXPECT_EQ(at(3).node_name, "d3") << "libvirt's two levels: the format node, at its file's place";
  EXPECT_EQ(at(3).path, "/img/three.qcow2");
  EXPECT_EQ(at(4).format, "") << "no format=: probed when opened, as QEMU does";
  EXPECT_EQ(at(4).node_name.rfind("#block", 0), 0U) << "named as QEMU names it";
  EXPECT_EQ(error_of({"-blockdev", "driver=file,node-name=a,filename=/x", "-blockdev",
                      "driver=file,node-name=a,filename=/y"}),
            "Duplicate nodes with node-name='a'");
}

TEST(vm_config, defaults_and_plain_ram) {
  auto c = parse({"-m", "256"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->ram_size, 256U << 20);
  EXPECT_EQ(c->backend.type, memory_backend::kind::ram);
  EXPECT_EQ(c->backend.size, 256U << 20);
  auto d = parse({});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->ram_size, 128U << 20) << "QEMU's default -m";
}

TEST(vm_config, backend_size_comes_from_the_object_without_m) {
  auto c =
    parse({"-object", "memory-backend-ram,id=r,size=64M", "-machine", "pc,memory-backend=r"});
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->ram_size, 64U << 20);
}

TEST(vm_config, memfd_backend_with_huge_pages) {
  auto c = parse({"-object", "memory-backend-memfd,id=r,size=64M,hugetlb=on,hugetlbsize=2M",
                  "-machine", "memory-backend=r"});
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->backend.type, memory_backend::kind::ram);
  EXPECT_TRUE(c->backend.hugetlb);
  EXPECT_EQ(c->backend.hugetlb_size, 2U << 20);
  EXPECT_EQ(c->ram_size, 64U << 20);
  auto plain = parse(
    {"-object", "memory-backend-memfd,id=r,size=64M,share=on", "-machine", "memory-backend=r"});
  ASSERT_TRUE(plain) << describe(plain.error());
  EXPECT_FALSE(plain->backend.hugetlb);
  EXPECT_EQ(plain->backend.hugetlb_size, 0U);
}

TEST(vm_config, accelerators) {
  auto k = parse({"-accel", "kvm,dirty-ring-size=4096"});
  ASSERT_TRUE(k);
  EXPECT_EQ(k->dirty_ring_size, 4096U);
  auto n = parse({"-accel", "none,dirty-rate=1000,ws-start=2M,ws-pages=16"});
  ASSERT_TRUE(n) << describe(n.error());
  EXPECT_EQ(n->accel, vm_config::accel_kind::none);
  EXPECT_EQ(n->dirty_rate, 1000U);
  EXPECT_EQ(n->ws_start, 2U << 20);
  EXPECT_EQ(n->ws_pages, 16U);
}

TEST(vm_config, the_colo_fence_is_off_unless_set) {
  auto c = parse({});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->colo_fence_ms, 0U);
  c = parse({"-object", "x-ferry-colo,id=colo0,fence-timeout=3000"});
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_EQ(c->colo_fence_ms, 3000U);
  EXPECT_FALSE(c->colo_compare) << "checkpoint mode unless asked";
  c = parse({"-object", "x-ferry-colo,id=colo0,output=compare"});
  ASSERT_TRUE(c) << describe(c.error());
  EXPECT_TRUE(c->colo_compare);
}

TEST(vm_config, bad_input_is_a_clear_error) {
  struct bad_case {
    std::vector<std::string> words;
    const char* fragment;
  };
  const std::vector<bad_case> cases = {
    {{"-bogus"}, "invalid option '-bogus'"},
    {{"-m"}, "requires an argument"},
    {{"-m", "lots"}, "not a size"},
    {{"-m", "1000"}, "<parsed>"},
    {{"-m", "64M", "-object", "memory-backend-ram,id=r,size=32M", "-machine", "memory-backend=r"},
     "backend memory size must be equal to -m"},
    {{"-machine", "memory-backend=nope"}, "Memory backend 'nope' not found"},
    {{"-object", "memory-backend-file,id=r,size=1M"}, "'mem-path' is required"},
    {{"-object", "memory-backend-ram,size=1M"}, "'id' is missing"},
    {{"-object", "memory-backend-ram,id=r,size=1M,colour=red"}, "Invalid parameter 'colour'"},
    {{"-object", "rng-random,id=x"}, "type 'rng-random' is not supported"},
    {{"-object", "memory-backend-memfd,id=r,size=2M,hugetlbsize=2M"}, "needs hugetlb=on"},
    {{"-object", "memory-backend-memfd,id=r,size=2M,hugetlb=on,hugetlbsize=3M"}, "power of two"},
    {{"-object", "memory-backend-memfd,id=r,size=2M,mem-path=/x"}, "Invalid parameter 'mem-path'"},
    {{"-object", "memory-backend-ram,id=r,size=2M,hugetlb=on"}, "Invalid parameter 'hugetlb'"},
    {{"-drive", "file=x,format=vmdk"}, "format 'vmdk' is not supported"},
    {{"-blockdev", "driver=qcow2,file.driver=file,file.filename=x"}, "node-name is required"},
    {{"-blockdev", "driver=vmdk,node-name=d"}, "driver 'vmdk' is not supported"},
    {{"-blockdev", "driver=qcow2,node-name=d"}, "Parameter 'file' is missing"},
    {{"-blockdev", "driver=qcow2,node-name=d,file=nowhere"}, "node-name='nowhere'"},
    {{"-blockdev", "driver=qcow2,node-name=d,file.filename=x,bogus=1"},
     "Invalid parameter 'bogus'"},
    {{"-blockdev", "{\"driver\":\"qcow2\""}, "not a JSON object"},
    {{"-drive", "format=raw"}, "file= is required"},
    {{"-qmp", "unix:/x"}, "server=on,wait=off"},
    {{"-qmp", "udp:1.2.3.4:5,server=on,wait=off"}, "expected unix:PATH or tcp:HOST:PORT"},
    {{"-qmp", "server=on,wait=off"}, "no address"},
    {{"-qmp", "tcp:localhost:99999,server=on,wait=off"}, "port out of range"},
    {{"-serial", "pty"}, "expected file:PATH"},
    {{"-smp", "0"}, "between 1 and 64"},
    {{"-uuid", "nope"}, "Fail to parse UUID"},
    {{"-accel", "tcg"}, "'tcg' is not available"},
    {{"-accel", "kvm,dirty-ring-size=1000"}, "power of two"},
    {{"-m", "4097B"}, "multiple of 4 KiB"},
    {{"-object", "x-ferry-colo,fence-timeout=1"}, "'id' is missing"},
    {{"-object", "x-ferry-colo,id=c,fence-timeout=soon"}, "fence-timeout"},
    {{"-object", "x-ferry-colo,id=c,fence-timeout=3600001"}, "at most 3600000 ms"},
    {{"-object", "x-ferry-colo,id=c,output=mirror"}, "output must be 'checkpoint' or 'compare'"},
    {{"-object", "x-ferry-colo,id=c,colour=red"}, "Invalid parameter 'colour'"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.words);
    EXPECT_NE(err.find(c.fragment), std::string::npos) << c.words.front() << " -> " << err;
  }
}
