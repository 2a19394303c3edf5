// ferry-verify: proves a test guest's memory dump (pmemsave output, or any
// file holding guest RAM from guest-physical 0) consistent. Exit status 0 when
// consistent, 1 when not, 2 when the dump cannot be read.

#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "tools/testguest/verifier.hpp"

#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>

int main(int argc, char** argv) try {
  CLI::App app{"Check a Ferry test guest's memory: pattern intact, counters in step"};
  std::string dump;
  std::string params_from;
  app.add_option("dump", dump, "guest memory dump (from guest-physical 0)")->required();
  app.add_option("--params-from", params_from,
                 "read the parameter block from this boot image instead of the "
                 "dump's copy at 0x7c00");
  uint32_t vcpus = 1;
  app.add_option("--vcpus", vcpus, "the guest ran with -smp N: check N working sets")
    ->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);

  std::optional<ferry::testguest::guest_params> params;
  if (!params_from.empty()) {
    std::ifstream in{params_from, std::ios::binary};
    std::vector<uint8_t> img{std::istreambuf_iterator<char>(in), {}};
    auto p = ferry::testguest::read_params(img);
    if (!p) {
      std::fprintf(stderr, "ferry-verify: %s: %s\n", params_from.c_str(),
                   ferry::describe(p.error()).c_str());
      return 2;
    }
    params = *p;
  }

  ferry::unique_fd fd{::open(dump.c_str(), O_RDONLY | O_CLOEXEC)};
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    std::perror(("ferry-verify: " + dump).c_str());
    return 2;
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* map = size == 0 ? nullptr : ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (size != 0 && map == MAP_FAILED) {
    std::perror("ferry-verify: mmap");
    return 2;
  }
  const auto report =
    ferry::testguest::verify({static_cast<const uint8_t*>(map), size}, params, vcpus);
  std::printf("%s\n", report.summary().c_str());
  if (map != nullptr)
    ::munmap(map, size);
  return report.consistent ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ferry-verify: %s\n", e.what());
  return 2;
}
