#include "protocol/qmp_framing.hpp"

#include <boost/json/parse_options.hpp>

namespace ferry::qmp {

namespace {

boost::json::parse_options options() {
  boost::json::parse_options opt;
  opt.max_depth = framer::max_depth;
  return opt;
}

bool only_whitespace(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

} // namespace

framer::framer() : parser_({}, options()) {}

void framer::reset() {
  parser_.reset();
  value_bytes_ = 0;
}

std::vector<framed> framer::feed(std::string_view bytes) {
  std::vector<framed> out;
  while (!bytes.empty()) {
    if (skipping_) {
      const auto nl = bytes.find('\n');
      if (nl == std::string_view::npos)
        return out;
      bytes.remove_prefix(nl + 1);
      skipping_ = false;
      continue;
    }
    if (value_bytes_ == 0) {
      // Whitespace between values is not part of any value.
      const auto start = bytes.find_first_not_of(" \t\r\n");
      if (start == std::string_view::npos)
        return out;
      bytes.remove_prefix(start);
    }
    boost::system::error_code ec;
    const size_t room = max_bytes - value_bytes_;
    const std::string_view chunk = bytes.substr(0, room);
    const size_t used = parser_.write_some(chunk.data(), chunk.size(), ec);
    value_bytes_ += used;
    bytes.remove_prefix(used);
    if (ec) {
      out.emplace_back("JSON parse error, " + ec.message());
      reset();
      skipping_ = true;
      continue;
    }
    if (parser_.done()) {
      out.emplace_back(parser_.release());
      reset();
      continue;
    }
    if (value_bytes_ >= max_bytes && !only_whitespace(bytes.substr(0, 1))) {
      out.emplace_back(std::string{"JSON parse error, input exceeds the size limit"});
      reset();
      skipping_ = true;
    }
  }
  return out;
}

} // namespace ferry::qmp
