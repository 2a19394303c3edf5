// Readiness for systemd: notify_service_manager speaks sd_notify's datagram
// protocol to $NOTIFY_SOCKET (a path or an abstract "@name").

#include "actors/control_node.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace ferry {
namespace {

class notify_socket {
public:
  explicit notify_socket(const std::string& name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@')
      addr.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0) << std::strerror(errno);
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }
  ~notify_socket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
  }
  notify_socket(const notify_socket&) = delete;
  notify_socket& operator=(const notify_socket&) = delete;

  std::string receive() {
    char buf[512];
    const auto n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string{};
  }

private:
  int fd_ = -1;
};

TEST(control_node, notifies_a_socket_path) {
  test::temp_dir dir;
  notify_socket sock{dir.file("notify")};
  EXPECT_TRUE(notify_service_manager("READY=1\nSTATUS=serving"));
  EXPECT_EQ(sock.receive(), "READY=1\nSTATUS=serving");
}

TEST(control_node, notifies_an_abstract_socket) {
  notify_socket sock{"@ferry-notify-test-" + std::to_string(::getpid())};
  EXPECT_TRUE(notify_service_manager("STOPPING=1"));
  EXPECT_EQ(sock.receive(), "STOPPING=1");
}

TEST(control_node, without_a_service_manager_nothing_is_sent) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(notify_service_manager("READY=1"));
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  EXPECT_FALSE(notify_service_manager("READY=1")) << "not a path systemd would give";
  ::unsetenv("NOTIFY_SOCKET");
}

} // namespace
} // namespace ferry
