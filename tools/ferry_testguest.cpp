// ferry-testguest: makes the counter test guest's boot image (with its
// parameters) and memory files pre-filled with its pattern.
//
//   ferry-testguest image guest.img --ram-top 256M --ws-pages 512
//   ferry-testguest pattern ram.bin --size 256M --image guest.img

#include "agent/cli/qemu_opts.hpp"
#include "agent/testguest/guest_image.hpp"
#include "agent/vmm/kvm/kvm_vm.hpp"
#include "common/error.hpp"
#include "tools/testguest/pattern_file.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>

namespace {

using ferry::testguest::guest_params;

int fail(const std::string& what) {
  std::fprintf(stderr, "ferry-testguest: %s\n", what.c_str());
  return 2;
}

bool size_option(const std::string& text, uint32_t& out, std::string& err) {
  if (text.empty())
    return true;
  auto v = ferry::parse_size(text);
  if (!v || *v > 0xffffffffULL) {
    err = "bad size '" + text + "'";
    return false;
  }
  out = static_cast<uint32_t>(*v);
  return true;
}

} // namespace

int main(int argc, char** argv) try {
  CLI::App app{"Build the Ferry counter test guest and its pre-filled memory"};
  app.require_subcommand(1);

  std::string out;
  std::string ram_top, pattern_start, ws_start, size, image;
  guest_params p;

  auto* img = app.add_subcommand("image", "write the boot image with its parameters");
  img->add_option("output", out, "image file to write")->required();
  img->add_option("--ram-top", ram_top, "end of the pattern (e.g. 256M)");
  img->add_option("--pattern-start", pattern_start, "start of the pattern (default 1M)");
  img->add_option("--ws-start", ws_start, "start of the working set (default 1M)");
  img->add_option("--ws-pages", p.ws_pages, "pages in the working set");
  img->add_option("--pace", p.pace, "busy-loop iterations after each page");
  img->add_option("--seed", p.seed, "pattern seed");
  img->add_option("--report-every", p.report_every, "passes between serial reports");

  auto* pat = app.add_subcommand("pattern", "write a RAM file pre-filled with the pattern");
  pat->add_option("output", out, "memory file to write")->required();
  pat->add_option("--size", size, "RAM size (e.g. 1G)")->required();
  pat->add_option("--image", image, "take the parameters from this boot image");

  // Scripts (the demo, the benchmark) choose -accel with this: KVM is usable
  // when it answers, not merely when /dev/kvm opens.
  auto* kvm = app.add_subcommand("kvm", "exit 0 if KVM is usable here, else say why (exit 1)");

  CLI11_PARSE(app, argc, argv);

  if (*kvm) {
    if (auto ok = ferry::kvm_available(); !ok)
      return fail(ferry::describe(ok.error()));
    std::puts("KVM is usable");
    return 0;
  }

  if (*img) {
    std::string err;
    if (!size_option(ram_top, p.ram_top, err) ||
        !size_option(pattern_start, p.pattern_start, err) ||
        !size_option(ws_start, p.ws_start, err))
      return fail(err);
    if (ws_start.empty())
      p.ws_start = p.pattern_start;
    auto bytes = ferry::testguest::builtin_image();
    std::vector<uint8_t> sector(bytes.begin(), bytes.end());
    if (auto ok = ferry::testguest::write_params(sector, p); !ok)
      return fail(ferry::describe(ok.error()));
    std::ofstream f{out, std::ios::binary | std::ios::trunc};
    f.write(reinterpret_cast<const char*>(sector.data()),
            static_cast<std::streamsize>(sector.size()));
    if (!f)
      return fail("cannot write " + out);
    return 0;
  }

  auto total = ferry::parse_size(size);
  if (!total)
    return fail(ferry::describe(total.error()));
  std::vector<uint8_t> sector;
  if (!image.empty()) {
    std::ifstream in{image, std::ios::binary};
    sector.assign(std::istreambuf_iterator<char>(in), {});
    auto read = ferry::testguest::read_params(sector);
    if (!read)
      return fail(image + ": " + ferry::describe(read.error()));
    p = *read;
  } else {
    auto bytes = ferry::testguest::builtin_image();
    sector.assign(bytes.begin(), bytes.end());
    p.ram_top = static_cast<uint32_t>(std::min<uint64_t>(*total, ferry::testguest::max_ram_top));
    if (auto ok = ferry::testguest::write_params(sector, p); !ok)
      return fail(ferry::describe(ok.error()));
  }
  if (auto ok = ferry::testguest::write_pattern_file(out, *total, p, sector); !ok)
    return fail(ferry::describe(ok.error()));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ferry-testguest: %s\n", e.what());
  return 2;
}
