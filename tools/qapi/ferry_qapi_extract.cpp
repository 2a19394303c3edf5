// ferry-qapi-extract: turns a QAPI schema (QEMU's qapi/migration.json, or a
// numbered listing of it such as shared/seeds/001_*.normalized.txt) into the
// JSON catalog Ferry builds from: one expression per line, documentation
// comments and 'include' directives dropped. With a third path it also
// writes the documentation's request/reply examples, one per line.
//
//   ferry-qapi-extract ../shared/seeds/001_*.normalized.txt
//       protocol/qapi/migration.json protocol/qapi/migration-examples.json

#include "protocol/qapi_examples.hpp"
#include "protocol/qapi_schema.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>

int main(int argc, char** argv) try {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: ferry-qapi-extract SCHEMA OUT.json [EXAMPLES.json]\n");
    return 2;
  }
  std::ifstream in{argv[1], std::ios::binary};
  if (!in) {
    std::fprintf(stderr, "ferry-qapi-extract: cannot read %s\n", argv[1]);
    return 2;
  }
  std::string text{std::istreambuf_iterator<char>(in), {}};
  // A numbered listing starts with its title line, not with schema text.
  const bool numbered = !text.starts_with('#') && !text.starts_with('{');
  const std::string schema = numbered ? ferry::qapi::strip_numbered_listing(text) : text;
  auto exprs = ferry::qapi::parse_schema(schema);
  if (!exprs) {
    std::fprintf(stderr, "ferry-qapi-extract: %s\n", caf::to_string(exprs.error()).c_str());
    return 1;
  }
  std::ofstream out{argv[2], std::ios::binary | std::ios::trunc};
  out << "[\n";
  bool first = true;
  for (const auto& e : *exprs) {
    if (e.contains("include"))
      continue;
    out << (first ? "" : ",\n") << boost::json::serialize(e);
    first = false;
  }
  out << "\n]\n";
  if (!out)
    return 1;
  if (argc == 4) {
    std::ofstream ex{argv[3], std::ios::binary | std::ios::trunc};
    ex << "[\n";
    first = true;
    for (const auto& e : ferry::qapi::extract_examples(schema)) {
      ex << (first ? "" : ",\n") << boost::json::serialize(e);
      first = false;
    }
    ex << "\n]\n";
    if (!ex)
      return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ferry-qapi-extract: %s\n", e.what());
  return 2;
}
