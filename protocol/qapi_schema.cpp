#include "protocol/qapi_schema.hpp"

#include "protocol/protocol_error.hpp"

#include <boost/json.hpp>

#include <cctype>

namespace ferry::qapi {

namespace json = boost::json;

namespace {

constexpr size_t max_depth = 64;

class reader {
public:
  explicit reader(std::string_view text) : text_(text) {}

  caf::expected<std::vector<json::object>> all() {
    std::vector<json::object> out;
    for (;;) {
      skip_space();
      if (at_ == text_.size())
        return out;
      auto v = value(0);
      if (!v)
        return v.error();
      if (!v->is_object())
        return fail("a top-level expression must be a dictionary");
      out.push_back(std::move(v->as_object()));
    }
  }

private:
  caf::error fail(const std::string& what) const {
    size_t line = 1;
    size_t col = 1;
    for (size_t i = 0; i < at_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return make_protocol_error(protocol_errc::malformed, "QAPI schema line " +
                                                           std::to_string(line) + ", column " +
                                                           std::to_string(col) + ": " + what);
  }

  void skip_space() {
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (c == '#') {
        while (at_ < text_.size() && text_[at_] != '\n')
          ++at_;
      } else if (std::isspace(static_cast<unsigned char>(c)) != 0) {
        ++at_;
      } else {
        return;
      }
    }
  }

  bool eat(char c) {
    skip_space();
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }

  caf::expected<std::string> string() {
    if (!eat('\''))
      return fail("expected a string");
    std::string s;
    while (at_ < text_.size() && text_[at_] != '\'') {
      if (text_[at_] == '\n')
        return fail("newline inside a string");
      if (text_[at_] == '\\')
        return fail("escapes are not part of the QAPI schema language");
      s += text_[at_++];
    }
    if (at_ == text_.size())
      return fail("unterminated string");
    ++at_;
    return s;
  }

  caf::expected<json::value> value(size_t depth) {
    if (depth > max_depth)
      return fail("nesting too deep");
    skip_space();
    if (at_ == text_.size())
      return fail("unexpected end of input");
    const char c = text_[at_];
    if (c == '\'') {
      auto s = string();
      if (!s)
        return s.error();
      return json::value(*s);
    }
    if (c == '{') {
      ++at_;
      json::object o;
      if (eat('}'))
        return json::value(std::move(o));
      for (;;) {
        auto key = string();
        if (!key)
          return key.error();
        if (!eat(':'))
          return fail("expected ':' after '" + *key + "'");
        auto v = value(depth + 1);
        if (!v)
          return v;
        if (o.contains(*key))
          return fail("duplicate key '" + *key + "'");
        o[*key] = std::move(*v);
        if (eat('}'))
          return json::value(std::move(o));
        if (!eat(','))
          return fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      ++at_;
      json::array a;
      if (eat(']'))
        return json::value(std::move(a));
      for (;;) {
        auto v = value(depth + 1);
        if (!v)
          return v;
        a.push_back(std::move(*v));
        if (eat(']'))
          return json::value(std::move(a));
        if (!eat(','))
          return fail("expected ',' or ']'");
      }
    }
    for (std::string_view word : {"true", "false"})
      if (text_.substr(at_, word.size()) == word) {
        at_ += word.size();
        return json::value(word == "true");
      }
    return fail(std::string{"unexpected character '"} + c + "'");
  }

  std::string_view text_;
  size_t at_ = 0;
};

} // namespace

caf::expected<std::vector<json::object>> parse_schema(std::string_view text) {
  return reader{text}.all();
}

std::string strip_numbered_listing(std::string_view text) {
  std::string out;
  size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (++line_no <= 3)
      continue; // title, repository path, blob id
    size_t i = 0;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])) != 0)
      ++i;
    if (i < line.size() && line[i] == ' ')
      ++i;
    out.append(line.substr(i));
    out += '\n';
  }
  return out;
}

} // namespace ferry::qapi
