// kvsim: a discrete-event simulator of LLM KV-cache memory under eviction.
#include <fmt/core.h>
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <exception>

#include "apps/command.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/version.h"

int main(int argc, char** argv) {
  // Eigen's GEMM allocates packing buffers of several MiB per product; glibc would serve each
  // from a fresh mmap and unmap it on free, so a replay spent ~15% of its time in page faults
  // re-touching the same buffers. Keep large blocks on the heap and the heap's top mapped.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  kvsim::ProtectInputFiles(true);  // `-o` naming an input file fails instead of replacing it
  kvsim::RemoveTemporaryFilesOnSignals();  // Ctrl-C leaves no OUTPUT.tmp.<pid> behind
  CLI::App app{
      "kvsim: replay LLM attention traces against budgeted KV caches and measure what eviction "
      "policies lose.",
      "kvsim"};
  app.set_version_flag("--version", std::string("kvsim ") + kvsim::kVersion);
  app.require_subcommand(1);
#define KVSIM_COMMAND(name, registrar) kvsim::apps::registrar(app);
#include "apps/commands.def"
#undef KVSIM_COMMAND
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with status 0; a usage error (unknown flag, bad value)
    // exits 2, like every other bad input.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const kvsim::InputError& e) {
    fmt::print(stderr, "kvsim: error: {}\n", e.what());
    return 2;
  } catch (const kvsim::InternalError& e) {
    fmt::print(stderr, "kvsim: {}\n", e.what());
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kvsim: error: {}\n", e.what());
    return 2;
  }
  return 0;
}
