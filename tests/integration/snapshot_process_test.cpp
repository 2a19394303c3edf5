// VM snapshots as QMP jobs on a qcow2 disk (issue 20): a running guest is
// saved with snapshot-save, the agent quits, QEMU's own `qemu-img snapshot
// -l` lists the tag and `qemu-img check` finds the image clean; a fresh
// agent started with -S loads it with snapshot-load, its memory verifies
// page by page and the guest goes on from the saved moment (no second
// boot); snapshot-delete removes it and the image stays clean. Requests
// that cannot work end their job with QEMU's reason and leave the guest
// running. Works with -accel none; qemu-img (qemu-utils) is the oracle.

#include "tests/integration/migration_fixture.hpp"
#include "tests/support/qemu_img.hpp"

#include <unistd.h>

#include <cstdio>

#include <gtest/gtest.h>

using namespace ferry::test;

namespace {

class snapshot : public migration_fixture {
protected:
  std::string disk = dir + "/disk.qcow2";

  void SetUp() override {
    if (!have_qemu_img())
      GTEST_SKIP() << "qemu-img (Debian qemu-utils) is the oracle for the qcow2 image; not "
                      "installed";
    make_guest("2048");
    // The test image's sector 0 (and its parameter block) as a qcow2 disk.
    qemu_img({"convert", "-f", "raw", "-O", "qcow2", image, disk});
    if (HasFailure())
      return;
    disk_args = {"-blockdev",
                 "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + disk};
  }

  // The pre-filled guest running from the qcow2 disk on `src`.
  void start_running() {
    start(src, {"-object",
                "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + ram + ",share=off",
                "-machine", "memory-backend=ram0"});
    ASSERT_TRUE(wait_for_text(src.serial, "pass 00000028", 30s))
      << read_file(src.serial) << src.agent->stderr_text();
  }

  // Starts `cmd` as job `id` on `h` and waits until it has concluded: its
  // JobInfo, and every event `h` raised meanwhile ("JOB:<status>" for
  // JOB_STATUS_CHANGE).
  // The guest's pause in the last job that paused it (STOP to RESUME, s).
  double stopped_at = 0;
  double paused_s = 0;

  std::pair<json::object, std::vector<std::string>> job(host& h, const std::string& cmd,
                                                        json::object args, const std::string& id) {
    args["job-id"] = id;
    auto r = h.exec(cmd, args);
    EXPECT_EQ(r.at("return"), json::object{}) << json::serialize(r);
    std::vector<std::string> events;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto ev = h.q->next_event(100ms);
      if (!ev)
        continue;
      std::string name{ev->at("event").as_string()};
      const auto& ts = ev->at("timestamp");
      const double t = static_cast<double>(ts.at("seconds").to_number<int64_t>()) +
                       static_cast<double>(ts.at("microseconds").to_number<int64_t>()) / 1e6;
      if (name == "STOP")
        stopped_at = t;
      if (name == "RESUME")
        paused_s = t - stopped_at;
      if (name == "JOB_STATUS_CHANGE")
        name = "JOB:" + std::string{ev->at("data").at("status").as_string()};
      events.push_back(name);
      if (name == "JOB:concluded")
        break;
    }
    const json::value jobs = h.exec("query-jobs");
    for (const auto& j : jobs.at("return").as_array())
      if (j.at("id").as_string() == id)
        return {j.as_object(), events};
    ADD_FAILURE() << id << " not in query-jobs";
    return {};
  }
};

} // namespace

TEST_F(snapshot, saved_running_listed_by_qemu_img_loaded_by_a_fresh_agent_and_deleted) {
  start_running();
  const json::object args{
    {"tag", "snap1"}, {"vmstate", "disk0"}, {"devices", json::array{"disk0"}}};
  const size_t before = last_pass(read_file(src.serial));
  auto [info, events] = job(src, "snapshot-save", args, "save0");
  const size_t after = last_pass(read_file(src.serial));
  EXPECT_FALSE(info.contains("error")) << json::serialize(info) << src.agent->stderr_text();
  EXPECT_EQ(info.at("status"), "concluded");
  EXPECT_EQ(info.at("type"), "snapshot-save");
  EXPECT_EQ(events, (std::vector<std::string>{"JOB:created", "JOB:running", "STOP", "RESUME",
                                              "JOB:waiting", "JOB:pending", "JOB:concluded"}));
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running")
    << "the guest runs on after the save";
  EXPECT_EQ(src.exec("job-dismiss", {{"id", "save0"}}).at("return"), json::object{});
  EXPECT_EQ(src.exec("query-jobs").at("return"), json::array{});
  // A second save under the same tag ends its job with QEMU's reason.
  auto [again, ev2] = job(src, "snapshot-save", args, "save1");
  EXPECT_EQ(again.at("error"), "Snapshot 'snap1' already exists in one or more devices");
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  src.exec("quit");
  EXPECT_TRUE(src.agent->wait(20s));

  const std::string listed = qemu_img({"snapshot", "-l", disk});
  EXPECT_NE(listed.find("snap1"), std::string::npos) << listed;
  EXPECT_NE(qemu_img({"check", disk}).find("No errors were found"), std::string::npos);

  // A fresh agent, stopped (-S), with plain RAM: everything comes from the
  // snapshot.
  start(dst, {"-S"});
  auto [loaded, ev3] = job(dst, "snapshot-load", args, "load0");
  EXPECT_FALSE(loaded.contains("error")) << json::serialize(loaded) << dst.agent->stderr_text();
  EXPECT_EQ(ev3, (std::vector<std::string>{"JOB:created", "JOB:running", "JOB:waiting",
                                           "JOB:pending", "JOB:concluded"}))
    << "no STOP/RESUME: the guest had not run";
  auto v = dump_and_verify(dst);
  EXPECT_EQ(v.status, 0) << v.output;
  EXPECT_NE(v.output.find("(0 bad)"), std::string::npos) << v.output;
  std::printf("snapshot of a %s guest: paused %.0f ms for the save; loaded into a fresh agent: "
              "%s",
              size.c_str(), paused_s * 1000, v.output.c_str());
  // It goes on from the saved moment: counting on, never booting again.
  EXPECT_EQ(dst.exec("cont").at("return"), json::object{});
  ASSERT_TRUE(wait_for_text(dst.serial, "pass ", 30s)) << dst.agent->stderr_text();
  const size_t first = std::stoul(read_file(dst.serial).substr(5, 8), nullptr, 16);
  EXPECT_GE(first, before) << "from the snapshot, not from boot";
  EXPECT_LE(first, after + 20);
  EXPECT_EQ(read_file(dst.serial).find("ready"), std::string::npos) << read_file(dst.serial);

  auto [deleted, ev4] =
    job(dst, "snapshot-delete", {{"tag", "snap1"}, {"devices", json::array{"disk0"}}}, "del0");
  EXPECT_FALSE(deleted.contains("error")) << json::serialize(deleted);
  // Loading what is gone: the job says so, the guest runs on.
  auto [missing, ev5] = job(dst, "snapshot-load", args, "load1");
  EXPECT_EQ(missing.at("error"), "Snapshot 'snap1' does not exist in one or more devices");
  EXPECT_EQ(dst.exec("query-status").at("return").at("status"), "running");
  dst.exec("quit");
  EXPECT_TRUE(dst.agent->wait(20s));
  EXPECT_EQ(qemu_img({"snapshot", "-l", disk}).find("snap1"), std::string::npos);
  const std::string check = qemu_img({"check", disk});
  EXPECT_NE(check.find("No errors were found"), std::string::npos) << check;
  EXPECT_EQ(check.find("leaked"), std::string::npos) << check;
}

TEST_F(snapshot, devices_that_cannot_hold_a_snapshot_end_the_job_with_the_reason) {
  // The raw test image first (it boots), the qcow2 disk second.
  disk_args = {"-drive", "file=" + image + ",format=raw,node-name=boot", "-blockdev",
               "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + disk};
  start_running();
  int n = 0;
  const auto reason = [&](const json::object& a, const char* cmd = "snapshot-save") {
    auto [info, events] = job(src, cmd, a, "j" + std::to_string(++n));
    return info.contains("error") ? std::string{info.at("error").as_string()} : "";
  };
  EXPECT_EQ(reason({{"tag", "t"}, {"vmstate", "boot"}, {"devices", json::array{"boot", "disk0"}}}),
            "Device 'boot' is writable but does not support snapshots");
  EXPECT_EQ(reason({{"tag", "t"}, {"vmstate", "nodisk"}, {"devices", json::array{"nodisk"}}}),
            "No block device node 'nodisk'");
  EXPECT_EQ(reason({{"tag", "t"}, {"vmstate", "disk0"}, {"devices", json::array{}}}),
            "vmstate block device 'disk0' is not in the devices list");
  EXPECT_EQ(reason({{"tag", "t"}, {"vmstate", "disk0"}, {"devices", json::array{"disk0"}}},
                   "snapshot-load"),
            "Snapshot 't' does not exist in one or more devices");
  EXPECT_EQ(src.exec("query-status").at("return").at("status"), "running");
  const size_t at = last_pass(read_file(src.serial));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (last_pass(read_file(src.serial)) <= at && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_GT(last_pass(read_file(src.serial)), at) << "the guest counts on";
}
