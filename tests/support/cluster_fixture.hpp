#pragma once
// The GoogleTest fixture of the cluster tests: three agents (host-a,
// host-b, host-c) and the orchestrator as real processes, a test-guest image
// (8 MiB, pattern-filled, dirtying 128 pages), and helpers to create guests,
// wait until they are checkable and verify them page by page where they run.
// Guests run on KVM where it is usable, else with -accel none.

#include "tests/support/process.hpp"
#include "tests/support/test_cluster.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ferry::test {

extern const std::vector<std::string> host_names;

// Stops guest `name` on `host`, dumps its first `bytes` of RAM, proves them
// consistent with ferry-verify (every page), then lets the guest run on.
void verify_guest_memory(const test_cluster& c, const std::string& name, const std::string& host,
                         uint64_t bytes);

class cluster : public ::testing::Test {
protected:
  void SetUp() override;
  void TearDown() override;
  // Extra [policy] TOML for the orchestrator.
  virtual std::string policy() const { return {}; }

  std::string image() const { return c.dir.file("guest.img"); }
  std::string run_dir(const std::string& h) const { return c.run_dir(h); }
  run_result ctl(std::vector<std::string> args) { return c.ctl(std::move(args)); }
  std::map<std::string, std::vector<std::string>> placements() { return c.placements(); }
  void start_orchestrator();
  void create(const std::string& name, const std::string& host, int priority = 0);
  // The test guest fills its RAM with the pattern before it reports "ready";
  // only then is its memory checkable.
  void wait_ready(const std::string& name, const std::string& host);
  // Stops the guest on `host`, dumps its RAM and proves it consistent, then
  // lets it run on.
  void verify_guest(const std::string& name, const std::string& host);

  test_cluster c;
};

} // namespace ferry::test
