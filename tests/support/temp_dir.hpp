#pragma once
// A fresh directory, removed with everything in it when the handle goes: test
// files never collide (not between tests, not between two suites running at
// once) and big RAM images do not pile up in /tmp.

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace ferry::test {

class temp_dir {
public:
  temp_dir() {
    char tmpl[] = "/tmp/ferry-test-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (d == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = d;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

} // namespace ferry::test
