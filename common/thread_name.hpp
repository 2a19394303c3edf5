#pragma once
// Names the calling thread as ps, top and perf show it. Linux keeps 15
// characters of a thread's name: a longer one is cut there (a guest's name
// after a prefix loses its tail, not the call).

#include <string>

namespace ferry {

void name_this_thread(const std::string& name);

} // namespace ferry
