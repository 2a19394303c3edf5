#pragma once
// A child process for integration tests: spawned with an argv, stderr kept
// in a file, killed when the handle goes out of scope.

#include "tests/support/temp_dir.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace ferry::test {

class process {
public:
  explicit process(std::vector<std::string> argv);
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  pid_t pid() const { return pid_; }
  // Exit status if the child ends within `timeout` (128+N when killed by N).
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();
  void signal(int sig);
  std::string stderr_text() const;

private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  temp_dir dir_;
  std::string stderr_path_ = dir_.file("stderr.txt");
};

// Runs a command to completion: exit status and combined stdout+stderr.
struct run_result {
  int status = -1;
  std::string output;
};
run_result run(const std::vector<std::string>& argv);

// Path of a built binary (FERRY_BUILD_DIR is set by CTest).
std::string binary(const std::string& relative);
std::string read_file(const std::string& path);
// A TCP connection to 127.0.0.1:port (close it yourself); -1 when refused.
int connect_loopback(uint16_t port);
// Waits until `path` contains `needle` (true) or the timeout passes.
bool wait_for_text(const std::string& path, const std::string& needle,
                   std::chrono::milliseconds timeout);

} // namespace ferry::test
