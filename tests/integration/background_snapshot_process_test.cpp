// background-snapshot: `migrate` to a file while the guest keeps running
// and dirtying its memory the whole time. The file holds the guest exactly
// as it was when the snapshot began (write-protect faults save each page
// before its first write): a new agent loads it with -incoming, its memory
// verifies page by page (a copy torn by the dirtying would not), and the
// guest counts on from the pass it was at when the snapshot began — not
// from where the source was when it ended. Works with -accel none.

#include "tests/integration/migration_fixture.hpp"

#include <cstdio>

using namespace ferry::test;

namespace {

struct background_snapshot : migration_fixture {};

} // namespace

TEST_F(background_snapshot, the_guest_runs_on_and_the_file_holds_the_moment_it_began) {
  make_guest("2048");
  start(src,
        {"-object", "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
         "-machine", "memory-backend=ram0"});
  ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s))
    << read_file(src.serial) << src.agent->stderr_text();
  auto r =
    src.exec("migrate-set-capabilities",
             {{"capabilities",
               json::array{json::object{{"capability", "background-snapshot"}, {"state", true}}}}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  // Slow enough that the guest writes many pages before the walk reaches them.
  r = src.exec("migrate-set-parameters", {{"max-bandwidth", 128 << 20}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  const std::string file = dir + "/bg.snapshot";
  const size_t before = last_pass(read_file(src.serial));
  r = src.exec("migrate", {{"uri", "file:" + file}});
  ASSERT_TRUE(r.as_object().contains("return")) << json::serialize(r);
  const size_t began = last_pass(read_file(src.serial));
  int running = 0, polls = 0;
  std::string st;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while ((st = src.status()) != "completed" && st != "failed" &&
         std::chrono::steady_clock::now() < deadline) {
    ++polls;
    running += src.exec("query-status").at("return").at("status") == "running" ? 1 : 0;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(st, "completed") << json::serialize(src.info()) << src.agent->stderr_text();
  const size_t ended = last_pass(read_file(src.serial));
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running")
    << "the guest runs on after the snapshot";
  EXPECT_GE(running, polls - 1) << "running while the snapshot was taken";
  EXPECT_GT(ended, began + 20) << "the guest kept counting (and dirtying) meanwhile";
  const auto info = src.info();
  std::printf("background snapshot of a %s guest: %lld ms, guest paused %lld ms at the start; "
              "passes %zu..%zu while it ran\n",
              size.c_str(), static_cast<long long>(info.at("total-time").to_number<int64_t>()),
              static_cast<long long>(info.at("downtime").to_number<int64_t>()), began, ended);
  EXPECT_LT(info.at("downtime").to_number<int64_t>(), 1000);

  start(dst, {"-incoming", "file:" + file});
  EXPECT_EQ(dst.wait_status({"completed", "failed"}, 60s), "completed")
    << json::serialize(dst.info()) << dst.agent->stderr_text();
  ASSERT_TRUE(wait_for_text(dst.serial, "pass ", 30s)) << dst.agent->stderr_text();
  const size_t first = std::stoul(read_file(dst.serial).substr(5, 8), nullptr, 16);
  EXPECT_GE(first, before) << "from the snapshot's moment";
  EXPECT_LE(first, began + 20) << "not from where the source was when the snapshot ended (" << ended
                               << ")";
  auto v = dump_and_verify(dst);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("(0 bad)"), std::string::npos) << v.output;
  std::printf("restored: %s", v.output.c_str());
}
