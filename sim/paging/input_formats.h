#pragma once
// Inputs of `kvsim paging` (sim/paging/README.md, "Inputs"): a trace, a plain kvsim requests file,
// or one stream in one of libCacheSim's formats: csv (the columns `kvsim requests --format csv`
// writes), oracleGeneral (24-byte binary records) or txt (one object id per line).
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sim/paging/extract.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::paging {

enum class InputFormat { kAuto, kTrace, kRequests, kCsv, kOracleGeneral, kTxt };
const char* InputFormatName(InputFormat format);
// "auto", "trace", "requests", "csv", "oracleGeneral" (any case; also "oracle"), "txt"; throws
// InputError naming `flag` otherwise.
InputFormat ParseInputFormat(std::string_view text, std::string_view flag);
// The format of `path` by content and name, as --input-format auto decides it: the kvsim requests
// header or the HDF5 signature first, then the name: `.csv` -> csv, a name containing
// "oracleGeneral" (libCacheSim's own rule) -> oracleGeneral, `.txt` -> txt. Throws InputError
// naming the file and the choices when none applies.
InputFormat DetectInputFormat(const std::filesystem::path& path);

// libCacheSim csv as `kvsim requests` writes it: an optional header `time,obj_id,obj_size`, then
// rows of three non-negative integers. Consecutive rows with the same time and strictly
// ascending ids form one step (so a kvsim export reads back as the same sequence); every row
// must have the obj_size of the first (kvsim pages have one size), which becomes page_bytes.
// Throws InputError naming the file, the line, the field and what was expected.
RequestSequence ReadLibCacheSimCsv(const std::filesystem::path& path);
// oracleGeneral records (request_sequence.h), grouped into steps as for csv. next_access_vtime is
// not trusted: the engine recomputes next uses from the ids. A file whose size is not a multiple
// of 24 is refused naming the offset of the truncated record.
RequestSequence ReadOracleGeneralSequence(const std::filesystem::path& path);
// libCacheSim txt: one object id per line (decimal, or 0x hex as libCacheSim's strtoull reads
// it), blank lines skipped, each request a step of its own, page_bytes 0 (no sizes).
RequestSequence ReadTxtIds(const std::filesystem::path& path);

// The streams of `path` read as `format` (kAuto: DetectInputFormat). A trace is extracted with
// `extract`; the libCacheSim formats give one stream named after the file's stem.
std::vector<RequestSequence> LoadPagingInput(const std::string& path,
                                             InputFormat format,
                                             const ExtractOptions& extract);

}  // namespace kvsim::paging
