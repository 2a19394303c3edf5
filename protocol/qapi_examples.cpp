#include "protocol/qapi_examples.hpp"

#include <boost/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace ferry::qapi {

namespace json = boost::json;

namespace {

// The comment text of a line ("# foo" -> " foo"), or nullopt for code.
std::optional<std::string_view> comment(std::string_view line) {
  const auto first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos || line[first] != '#')
    return std::nullopt;
  return line.substr(first + 1);
}

} // namespace

json::array extract_examples(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  json::array out;
  json::value pending_request = nullptr;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto c = comment(lines[i]);
    if (!c)
      continue;
    const auto at = c->find_first_not_of(" \t");
    if (at == std::string_view::npos || c->size() < at + 2)
      continue;
    const std::string_view marker = c->substr(at, 2);
    if (marker != "->" && marker != "<-")
      continue;
    // The message runs over following comment lines until it parses.
    json::stream_parser p;
    boost::system::error_code ec;
    std::string_view chunk = c->substr(at + 2);
    size_t j = i;
    for (;;) {
      p.write(chunk.data(), chunk.size(), ec);
      if (ec || p.done() || ++j >= lines.size())
        break;
      auto next = comment(lines[j]);
      if (!next)
        break;
      p.write(" ", 1, ec); // the line break, so tokens never run together
      chunk = *next;
    }
    if (!ec && !p.done())
      p.finish(ec);
    i = j;
    if (ec || !p.done())
      continue;
    json::value msg = p.release();
    if (marker == "->") {
      pending_request = std::move(msg);
      continue;
    }
    out.push_back(json::object{{"request", std::move(pending_request)}, {"reply", std::move(msg)}});
    pending_request = nullptr;
  }
  return out;
}

} // namespace ferry::qapi
