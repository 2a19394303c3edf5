#pragma once
// State-machine oracles for the walk tests, written in another form than the
// tables under test: per state, "event>next event>next ..." words.

#include <map>
#include <sstream>
#include <string>

namespace ferry::test {

using transition_oracle = std::map<std::string, std::string>;

// The legal edges out of `from`, as event -> next state.
inline std::map<std::string, std::string> legal(const transition_oracle& oracle,
                                                const std::string& from) {
  std::map<std::string, std::string> out;
  auto it = oracle.find(from);
  if (it == oracle.end())
    return out;
  std::string word;
  std::istringstream in{it->second};
  while (in >> word) {
    const auto gt = word.find('>');
    out[word.substr(0, gt)] = word.substr(gt + 1);
  }
  return out;
}

// How many edges the oracle names in all.
inline size_t edge_count(const transition_oracle& oracle) {
  size_t n = 0;
  for (const auto& [from, words] : oracle)
    n += legal(oracle, from).size();
  return n;
}

} // namespace ferry::test
