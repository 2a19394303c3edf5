#pragma once
// Splits a QMP byte stream into JSON values. Input may arrive in any pieces:
// a value split across reads, or several values in one read. Input is
// untrusted: a value may nest at most max_depth deep and be at most max_bytes
// long. After malformed JSON the framer reports one error and skips to the
// end of the line, so the connection survives and the next command is read.

#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ferry::qmp {

// A complete value, or the description of why input was rejected.
using framed = std::variant<boost::json::value, std::string>;

class framer {
public:
  static constexpr size_t max_depth = 1024;
  static constexpr size_t max_bytes = 16u << 20;

  framer();
  std::vector<framed> feed(std::string_view bytes);

private:
  void reset();

  boost::json::stream_parser parser_;
  size_t value_bytes_ = 0; // bytes fed into the value being parsed
  bool skipping_ = false;  // discarding up to the next newline after an error
};

} // namespace ferry::qmp
