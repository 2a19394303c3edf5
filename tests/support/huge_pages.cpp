#include "tests/support/huge_pages.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace ferry::test {

namespace {

constexpr const char* nr_path = "/proc/sys/vm/nr_hugepages";

int64_t read_total() {
  std::ifstream f{nr_path};
  int64_t n = -1;
  f >> n;
  return f ? n : -1;
}

bool write_total(int64_t n) {
  std::ofstream f{nr_path};
  f << n << '\n';
  f.flush();
  return static_cast<bool>(f);
}

} // namespace

uint64_t free_huge_pages() {
  std::ifstream f{"/proc/meminfo"};
  std::string key;
  uint64_t value = 0;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in{line};
    if (in >> key >> value && key == "HugePages_Free:")
      return value;
  }
  return 0;
}

huge_page_reservation::huge_page_reservation(uint64_t pages) {
  lock_fd_ = ::open("/tmp/ferry-test-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (lock_fd_ >= 0)
    (void) ::flock(lock_fd_, LOCK_EX);
  const uint64_t have = free_huge_pages();
  if (have >= pages)
    return;
  const int64_t total = read_total();
  if (total < 0 || ::access(nr_path, W_OK) != 0) {
    reason_ = "needs " + std::to_string(pages) + " free huge pages (HugePages_Free is " +
              std::to_string(have) + "; reserving them takes root: vm.nr_hugepages)";
    return;
  }
  if (!write_total(total + static_cast<int64_t>(pages - have))) {
    reason_ = "could not raise vm.nr_hugepages to reserve " + std::to_string(pages) + " huge pages";
    return;
  }
  restore_total_ = total;
  if (free_huge_pages() < pages)
    reason_ = "the kernel found only " + std::to_string(free_huge_pages()) + " of " +
              std::to_string(pages) + " huge pages (memory too fragmented)";
}

huge_page_reservation::~huge_page_reservation() {
  if (restore_total_ >= 0)
    (void) write_total(restore_total_);
  if (lock_fd_ >= 0)
    ::close(lock_fd_); // releases the lock
}

} // namespace ferry::test
