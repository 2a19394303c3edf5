// ferry-qmp: run QMP commands against a socket from the shell.
//
//   ferry-qmp /run/vm1.qmp query-status
//   ferry-qmp /run/vm1.qmp pmemsave '{"val":0,"size":4096,"filename":"/tmp/d"}'
//
// Negotiates capabilities, prints each reply as one JSON line, and exits 1
// if any command answered an error.

#include "tools/qmp/qmp_client.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: ferry-qmp SOCKET COMMAND [JSON-ARGUMENTS] [COMMAND ...]\n");
    return 2;
  }
  try {
    ferry::qmp_tool::qmp_client q{argv[1]};
    q.negotiate();
    int status = 0;
    for (int i = 2; i < argc; ++i) {
      boost::json::object args;
      const bool has_args = i + 1 < argc && argv[i + 1][0] == '{';
      if (has_args) {
        boost::system::error_code ec;
        auto v = boost::json::parse(argv[i + 1], ec);
        if (ec || !v.is_object()) {
          std::fprintf(stderr, "ferry-qmp: arguments for %s are not a JSON object\n", argv[i]);
          return 2;
        }
        args = v.as_object();
      }
      const auto reply = q.execute(argv[i], args);
      std::printf("%s\n", boost::json::serialize(reply).c_str());
      if (reply.as_object().contains("error"))
        status = 1;
      if (has_args)
        ++i;
    }
    return status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry-qmp: %s\n", e.what());
    return 2;
  }
}
