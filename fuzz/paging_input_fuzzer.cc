// The inputs of `kvsim paging` (sim/paging/input_formats.h, request_sequence.h). Input: one
// byte choosing the reader (kvsim requests file, libCacheSim csv, oracleGeneral, txt), then the
// file. Every stream read is then densified, as the paging engine does before simulating.
#include "fuzz/fuzz_util.h"
#include "sim/paging/input_formats.h"
#include "sim/paging/request_sequence.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int format = data[0] % 4;
  const char* suffixes[4] = {".requests", ".csv", ".oracleGeneral", ".txt"};
  const std::string& path = kvsim::fuzz::WriteInput(data + 1, size - 1, suffixes[format]);
  return kvsim::fuzz::Run([&] {
    namespace paging = kvsim::paging;
    std::vector<paging::RequestSequence> streams;
    switch (format) {
      case 0:
        streams = paging::ReadRequestsFile(path);
        break;
      case 1:
        streams.push_back(paging::ReadLibCacheSimCsv(path));
        break;
      case 2:
        streams.push_back(paging::ReadOracleGeneralSequence(path));
        break;
      default:
        streams.push_back(paging::ReadTxtIds(path));
        break;
    }
    for (const paging::RequestSequence& s : streams) paging::Densify(s);
  });
}
