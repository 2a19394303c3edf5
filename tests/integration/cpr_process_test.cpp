// Guest RAM in a shared file (memory-backend-file,share=on) and
// x-ignore-shared: no page goes on the wire, the next agent maps the same
// file. mode cpr-reboot: the guest stops, its CPU and device state go to a
// file, the agent quits, a new agent started with -incoming defer loads the
// state and the guest runs on from the file — in milliseconds whatever the
// RAM size (printed). A destination mapping another file is refused before
// its guest runs. The guest is verified page by page after every restore.

#include "tests/integration/migration_fixture.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

using namespace ferry::test;

namespace {

using clock_type = std::chrono::steady_clock;

class cpr : public migration_fixture {
protected:
  // The test guest with its RAM in the shared file `ram`, the pattern
  // already there; `more` extends its command line.
  void start_shared(host& h, std::vector<std::string> more = {}) {
    std::vector<std::string> args{
      "-object", "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=on",
      "-machine", "memory-backend=ram0"};
    args.insert(args.end(), more.begin(), more.end());
    start(h, args);
  }

  // x-ignore-shared (and events) on `h`, and the migration mode.
  // With `mapped`, mapped-ram too (the state goes into a mapped-ram file).
  bool mapped = false;
  void ignore_shared(host& h, const char* mode = "normal") const {
    json::array caps{json::object{{"capability", "x-ignore-shared"}, {"state", true}},
                     json::object{{"capability", "events"}, {"state", true}}};
    if (mapped)
      caps.push_back(json::object{{"capability", "mapped-ram"}, {"state", true}});
    auto r = h.exec("migrate-set-capabilities", {{"capabilities", caps}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    r = h.exec("migrate-set-parameters", {{"mode", mode}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  }

  // The source saves its guest for cpr-reboot into `state` and quits; when
  // it was told to save.
  clock_type::time_point save_and_quit(const std::string& state) {
    make_guest("2048");
    start_shared(src);
    EXPECT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s))
      << read_file(src.serial) << src.agent->stderr_text();
    ignore_shared(src, "cpr-reboot");
    const auto saved = clock_type::now();
    auto r = src.exec("migrate", {{"uri", "file:" + state}});
    EXPECT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    EXPECT_EQ(src.wait_status({"completed", "failed"}, 30s), "completed")
      << json::serialize(src.info()) << src.agent->stderr_text();
    EXPECT_EQ(src.exec("query-status").at("return").at("status"), "postmigrate");
    EXPECT_EQ(src.info().at("ram").at("normal").to_number<uint64_t>(), 0U) << "no page was sent";
    EXPECT_TRUE(src.exec("quit").as_object().contains("return"));
    EXPECT_TRUE(src.agent->wait(10s).has_value()) << "the old agent is gone";
    return saved;
  }

  // A new agent (-incoming defer, the same shared file and settings) loads
  // the saved `state`.
  void restore_on_a_new_agent(const std::string& state) {
    start_shared(dst, {"-incoming", "defer"});
    ignore_shared(dst, "cpr-reboot");
    auto r = dst.exec("migrate-incoming", {{"uri", "file:" + state}});
    ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
    ASSERT_EQ(dst.wait_status({"completed", "failed"}, 30s), "completed")
      << json::serialize(dst.info()) << dst.agent->stderr_text();
  }
};

// A gibibyte in shared memory (/dev/shm), as a host that restarts its agent
// keeps it; removed afterwards.
class cpr_shm : public cpr {
protected:
  void SetUp() override {
    ram = "/dev/shm/ferry-cpr-" + std::to_string(::getpid()) + ".ram";
    size = "1G";
    bytes = 1u << 30;
  }
  void TearDown() override { ::unlink(ram.c_str()); }
};

TEST_F(cpr_shm, cpr_reboot_brings_a_gibibyte_guest_back_from_shared_memory) {
  if (::access("/dev/shm", W_OK) != 0)
    GTEST_SKIP() << "no writable /dev/shm for the guest's shared memory";
  const std::string state = dir + "/cpr.state";
  const auto saved = save_and_quit(state);
  const auto quit = clock_type::now();
  const auto state_bytes = std::filesystem::file_size(state);
  EXPECT_LT(state_bytes, 64u << 10) << "CPU and device state only, no RAM";

  ASSERT_NO_FATAL_FAILURE(restore_on_a_new_agent(state));
  while (dst.exec("query-status").at("return").at("status") != "running" &&
         clock_type::now() - quit < 30s)
    std::this_thread::sleep_for(1ms);
  const auto ran = clock_type::now();
  auto ms = [](clock_type::duration d) {
    return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  std::printf("cpr-reboot of a %s guest in %s: state file %llu bytes; saved in %lld ms; a new "
              "agent ran the guest %lld ms after the old one quit; downtime (migrate to "
              "running again, the agent's restart included) %lld ms\n",
              size.c_str(), ram.c_str(), static_cast<unsigned long long>(state_bytes),
              ms(quit - saved), ms(ran - quit), ms(ran - saved));
  expect_destination_runs_on("261888");
}

// cpr-reboot into a mapped-ram file (as a QEMU user may ask): the file holds
// no page of the shared RAM, and restoring it zeroes none of it.
TEST_F(cpr, cpr_reboot_into_a_mapped_ram_file_leaves_the_shared_ram_alone) {
  mapped = true;
  const std::string state = dir + "/cpr.mapped";
  save_and_quit(state);
  ASSERT_NO_FATAL_FAILURE(restore_on_a_new_agent(state));
  expect_destination_runs_on("65280");
}

TEST_F(cpr, a_destination_mapping_another_file_is_refused_and_never_runs) {
  const std::string state = dir + "/cpr.state";
  save_and_quit(state);
  // Another file of the same size (all zeros), where the guest's should be.
  ram = dir + "/other.bin";
  { std::ofstream f{ram}; }
  std::filesystem::resize_file(ram, bytes);
  start_shared(dst, {"-incoming", "defer"});
  ignore_shared(dst, "cpr-reboot");
  auto r = dst.exec("migrate-incoming", {{"uri", "file:" + state}, {"exit-on-error", false}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  ASSERT_EQ(dst.wait_status({"completed", "failed"}, 30s), "failed");
  const auto why = std::string{dst.info().at("error-desc").as_string()};
  EXPECT_NE(why.find("guest RAM here is not the source's"), std::string::npos) << why;
  EXPECT_NE(dst.exec("query-status").at("return").at("status"), "running") << "never ran";
  // Nothing was written into the file it maps.
  std::ifstream f{ram, std::ios::binary};
  std::vector<char> buf(1u << 20);
  bool zero = true;
  while (zero && f.read(buf.data(), static_cast<std::streamsize>(buf.size())))
    zero = std::all_of(buf.begin(), buf.end(), [](char c) { return c == 0; });
  EXPECT_TRUE(zero) << "the other file is untouched";
}

// Both agents at once on one host, one shared file: a live migration that
// sends no page (QEMU's local migration with x-ignore-shared).
TEST_F(cpr, x_ignore_shared_moves_a_running_guest_between_two_agents_without_its_pages) {
  make_guest("2048");
  start_shared(src);
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s)) << src.agent->stderr_text();
  start_shared(dst, {"-incoming", "defer"});
  ignore_shared(src);
  // Without the capability the destination refuses: it would wait for pages.
  auto r = dst.exec("migrate-incoming",
                    {{"uri", "unix:" + dir + "/refused.sock"}, {"exit-on-error", false}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  ASSERT_TRUE(
    src.exec("migrate", {{"uri", "unix:" + dir + "/refused.sock"}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 30s), "failed");
  EXPECT_NE(std::string{src.info().at("error-desc").as_string()}.find("x-ignore-shared"),
            std::string::npos)
    << json::serialize(src.info());
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  // A new destination with the capability takes it.
  EXPECT_TRUE(dst.exec("quit").as_object().contains("return"));
  EXPECT_TRUE(dst.agent->wait(10s).has_value());
  start_shared(dst, {"-incoming", "defer"});
  ignore_shared(dst);
  r = dst.exec("migrate-incoming", {{"uri", "unix:" + dir + "/mig.sock"}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  ASSERT_TRUE(
    src.exec("migrate", {{"uri", "unix:" + dir + "/mig.sock"}}).as_object().contains("return"));
  ASSERT_EQ(src.wait_status({"completed", "failed"}, 30s), "completed")
    << json::serialize(src.info()) << src.agent->stderr_text();
  std::printf("x-ignore-shared: %s\n", json::serialize(src.info()).c_str());
  EXPECT_EQ(src.info().at("ram").at("normal").to_number<uint64_t>(), 0U);
  EXPECT_LT(src.info().at("ram").at("transferred").to_number<uint64_t>(), 64u << 10);
  expect_destination_runs_on("65280");
}

TEST_F(cpr, cpr_reboot_refuses_what_cannot_follow_a_quit) {
  make_guest("2048");
  start_shared(src);
  ignore_shared(src, "cpr-reboot");
  auto r = src.exec(
    "migrate-set-capabilities",
    {{"capabilities", json::array{json::object{{"capability", "x-ignore-shared"}, {"state", false}},
                                  json::object{{"capability", "postcopy-ram"}, {"state", true}}}}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  r = src.exec("migrate", {{"uri", "file:" + dir + "/x.state"}});
  ASSERT_TRUE(r.as_object().contains("error")) << json::serialize(r);
  EXPECT_NE(std::string{r.at("error").at("desc").as_string()}.find("cpr-reboot"), std::string::npos)
    << json::serialize(r);
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
}

} // namespace
