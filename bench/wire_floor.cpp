// The machine's floor under a migration, measured the way a migration pays
// it, so that the benchmark can say how far above it each VMM lands:
//   wire:        BYTES of page data from resident memory over STREAMS loopback
//                TCP connections straight into fresh memory of SIZE (each
//                receiver reads into its own region, so the destination's first
//                touch is inside), 1 MiB per write as a streaming sender does;
//   first touch: one thread writing fresh memory of SIZE, page after page.
// Memory is anonymous and advised for transparent huge pages, as both VMMs'
// guest RAM is. Prints "WIRE_MS TOUCH_MS". Opt-in (not in ctest):
//   build/bench/ferry-wire-floor BYTES STREAMS SIZE [PORT]

#include "common/thread_name.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
constexpr size_t chunk = size_t{1} << 20;

double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "ferry-wire-floor: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct region {
  uint8_t* data = nullptr;
  size_t size = 0;
  explicit region(size_t n) : size(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      die("mmap");
    data = static_cast<uint8_t*>(p);
    // Without THP on offer the advice fails and the memory is in base pages,
    // as a VMM's would be.
    (void) ::madvise(p, n, MADV_HUGEPAGE);
  }
  region(const region&) = delete;
  region& operator=(const region&) = delete;
  ~region() { ::munmap(data, size); }
};

// Writes [p, p+n) to fd in 1 MiB writes; false if the connection broke.
bool send_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::write(fd, p, std::min(n, chunk));
    if (k <= 0)
      return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool receive_all(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::read(fd, p, std::min(n, chunk));
    if (k <= 0)
      return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// Connected pairs (client, server) over loopback, made before the clock runs
// (a migration's channel set-up is a few ms of its setup-time).
std::vector<std::pair<int, int>> connect_pairs(int streams, uint16_t port) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0)
    die("socket");
  const int one = 1;
  (void) ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    die("bind 127.0.0.1:" + std::to_string(port));
  if (::listen(listener, streams) != 0)
    die("listen");
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < streams; ++i) {
    const int c = ::socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || ::connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      die("connect");
    const int s = ::accept(listener, nullptr, nullptr);
    if (s < 0)
      die("accept");
    pairs.emplace_back(c, s);
  }
  ::close(listener);
  return pairs;
}

double wire_ms(size_t bytes, int streams, size_t size, uint16_t port) {
  region src{bytes};
  std::memset(src.data, 0x5a, bytes); // resident, as a source guest's RAM is
  region dst{size};
  auto pairs = connect_pairs(streams, port);
  const size_t share = bytes / static_cast<size_t>(streams);
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  const auto t0 = clock_type::now();
  for (int i = 0; i < streams; ++i) {
    const size_t off = share * static_cast<size_t>(i);
    const size_t n = i + 1 == streams ? bytes - off : share;
    threads.emplace_back([&, off, n, fd = pairs[static_cast<size_t>(i)].first] {
      ferry::name_this_thread("floor-send");
      if (!send_all(fd, src.data + off, n))
        failed = true;
    });
    threads.emplace_back([&, off, n, fd = pairs[static_cast<size_t>(i)].second] {
      ferry::name_this_thread("floor-recv");
      if (!receive_all(fd, dst.data + off, n))
        failed = true;
    });
  }
  for (auto& t : threads)
    t.join();
  const double ms = ms_since(t0);
  for (auto [c, s] : pairs) {
    ::close(c);
    ::close(s);
  }
  if (failed)
    die("the loopback transfer broke off");
  return ms;
}

double first_touch_ms(size_t size) {
  region fresh{size};
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const auto t0 = clock_type::now();
  for (size_t off = 0; off < size; off += page)
    fresh.data[off] = 1;
  return ms_since(t0);
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fputs("usage: ferry-wire-floor BYTES STREAMS SIZE [PORT]\n", stderr);
    return 2;
  }
  const auto bytes = std::strtoull(argv[1], nullptr, 10);
  const int streams = std::atoi(argv[2]);
  const auto size = std::max<unsigned long long>(std::strtoull(argv[3], nullptr, 10), bytes);
  const auto port = static_cast<uint16_t>(argc > 4 ? std::atoi(argv[4]) : 17111);
  if (bytes == 0 || streams < 1 || streams > 64) {
    std::fputs("ferry-wire-floor: BYTES > 0 and 1 <= STREAMS <= 64\n", stderr);
    return 2;
  }
  const double wire = wire_ms(bytes, streams, size, port);
  const double touch = first_touch_ms(size);
  std::printf("%.0f %.0f\n", wire, touch);
  return 0;
}
