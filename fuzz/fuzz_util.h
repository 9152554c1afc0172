#pragma once
// Shared by the libFuzzer harnesses (fuzz/*_fuzzer.cc, README "Fuzzing"). Each harness feeds
// one input to one of kvsim's file readers. InputError is the expected outcome of a malformed
// input (the reader named the problem); anything else is a bug: a crash or sanitizer report, a
// hang, or any other exception (InternalError from KVSIM_ASSERT, std::bad_alloc from a size
// field trusted too far, a library's own exception type), which Run() turns into an abort so
// libFuzzer saves the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "common/error.h"

namespace kvsim::fuzz {

// Writes the input to a file unique to this process (the readers take paths, and libhdf5 reads
// files) and returns its path; the same path every call, removed at exit. `suffix` is the file
// name extension some readers look at (".h5", ".csv").
const std::string& WriteInput(const uint8_t* data, size_t size, const char* suffix);

template <typename Fn>
int Run(Fn&& fn) {
  try {
    fn();
  } catch (const InputError&) {
    // The expected result of a bad input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvsim fuzz: not an InputError: %s\n", e.what());
    std::abort();
  }
  return 0;
}

}  // namespace kvsim::fuzz
