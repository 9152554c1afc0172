#include "sim/paging/input_formats.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::paging {
namespace {

constexpr std::string_view kCsvHeader = "time,obj_id,obj_size";

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

template <typename Int>
bool ParseWhole(std::string_view token, Int& value, int base = 10) {
  if (token.empty()) return false;
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, value, base);
  return ec == std::errc() && ptr == end;
}

// Builds steps from (time, id) requests in file order: a request joins the current step when it
// has the step's time and an id above the step's last one, else it starts a new step.
class StepBuilder {
 public:
  explicit StepBuilder(RequestSequence& seq) : seq_(seq) {}
  void Add(int64_t time, uint64_t id) {
    if (!open_ || time != time_ || id <= seq_.pages.back()) {
      Close();
      open_ = true;
      time_ = time;
      seq_.step_position.push_back(time);
    }
    seq_.pages.push_back(id);
  }
  void Close() {
    if (open_) seq_.step_begin.push_back(static_cast<int64_t>(seq_.pages.size()));
    open_ = false;
  }

 private:
  RequestSequence& seq_;
  bool open_ = false;
  int64_t time_ = 0;
};

// Calls fn(line_no, line) for every line without its '\r\n' / '\n'.
template <typename Fn>
void ForEachLine(const std::string& text, Fn&& fn) {
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = eol + 1;
    fn(++line_no, line);
  }
}

RequestSequence NamedSequence(const std::filesystem::path& path) {
  RequestSequence seq;
  seq.stream = path.stem().string();
  if (seq.stream.empty()) seq.stream = "input";
  return seq;
}

void CheckSize(const std::filesystem::path& path,
               const std::string& where,
               uint64_t size,
               RequestSequence& seq,
               bool first) {
  if (first) {
    seq.page_bytes = static_cast<int64_t>(size);
  } else if (static_cast<int64_t>(size) != seq.page_bytes) {
    ThrowInputError(
        "{}: {} has obj_size {}, expected {} as in the first request (kvsim pages all have one "
        "size)",
        path.string(), where, size, seq.page_bytes);
  }
}

}  // namespace

const char* InputFormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kAuto:
      return "auto";
    case InputFormat::kTrace:
      return "trace";
    case InputFormat::kRequests:
      return "requests";
    case InputFormat::kCsv:
      return "csv";
    case InputFormat::kOracleGeneral:
      return "oracleGeneral";
    case InputFormat::kTxt:
      return "txt";
  }
  return "?";
}

InputFormat ParseInputFormat(std::string_view text, std::string_view flag) {
  const std::string lower = Lower(text);
  if (lower == "auto") return InputFormat::kAuto;
  if (lower == "trace") return InputFormat::kTrace;
  if (lower == "requests" || lower == "plain") return InputFormat::kRequests;
  if (lower == "csv") return InputFormat::kCsv;
  if (lower == "oraclegeneral" || lower == "oracle") return InputFormat::kOracleGeneral;
  if (lower == "txt") return InputFormat::kTxt;
  ThrowInputError("{} '{}': expected auto, trace, requests, csv, oracleGeneral or txt", flag, text);
}

namespace {

// kRequests or kTrace by the first bytes of `path`, else kAuto.
InputFormat SniffContent(const std::filesystem::path& path) {
  RegisterInputFile(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open the file", path.string());
  std::string head(14, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (head.starts_with("kvsim-requests")) return InputFormat::kRequests;
  if (head.starts_with("\x89HDF\r\n\x1a\n")) return InputFormat::kTrace;
  return InputFormat::kAuto;
}

}  // namespace

InputFormat DetectInputFormat(const std::filesystem::path& path) {
  const InputFormat by_content = SniffContent(path);
  if (by_content != InputFormat::kAuto) return by_content;
  const std::string name = Lower(path.filename().string());
  const std::string ext = Lower(path.extension().string());
  if (ext == ".csv") return InputFormat::kCsv;
  if (name.find("oraclegeneral") != std::string::npos) return InputFormat::kOracleGeneral;
  if (ext == ".txt") return InputFormat::kTxt;
  ThrowInputError(
      "{}: cannot tell its format: neither a kvsim trace (HDF5) nor a kvsim requests file "
      "(first line 'kvsim-requests 1'), and the name is not *.csv, *oracleGeneral* or *.txt; "
      "pass --input-format trace|requests|csv|oracleGeneral|txt",
      path.string());
}

RequestSequence ReadLibCacheSimCsv(const std::filesystem::path& path) {
  const std::string text = ReadFileToString(path);
  RequestSequence seq = NamedSequence(path);
  StepBuilder steps(seq);
  bool first_row = true;
  bool seen_line = false;
  ForEachLine(text, [&](int64_t line_no, std::string_view line) {
    if (line.empty()) return;
    if (!seen_line) {
      seen_line = true;
      if (line == kCsvHeader) return;
    }
    std::string_view fields[3];
    size_t count = 0;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      const std::string_view field = line.substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      if (count < 3) fields[count] = field;
      ++count;
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    if (count != 3) {
      ThrowInputError("{}: line {} has {} fields, expected 3 (time,obj_id,obj_size{})",
                      path.string(), line_no, count,
                      line_no == 1 ? ", or the header 'time,obj_id,obj_size'" : "");
    }
    static constexpr const char* kNames[3] = {"time", "obj_id", "obj_size"};
    uint64_t values[3] = {0, 0, 0};
    for (size_t f = 0; f < 3; ++f) {
      if (!ParseWhole(fields[f], values[f])) {
        ThrowInputError("{}: line {} field {} ({}) is '{}', expected a non-negative integer{}",
                        path.string(), line_no, f + 1, kNames[f], fields[f],
                        line_no == 1 ? " (or the header 'time,obj_id,obj_size')" : "");
      }
    }
    if (values[0] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      ThrowInputError("{}: line {} time {} does not fit int64", path.string(), line_no, values[0]);
    }
    CheckSize(path, fmt::format("line {}", line_no), values[2], seq, first_row);
    first_row = false;
    steps.Add(static_cast<int64_t>(values[0]), values[1]);
  });
  steps.Close();
  return seq;
}

RequestSequence ReadOracleGeneralSequence(const std::filesystem::path& path) {
  const std::string bytes = ReadFileToString(path);
  const size_t whole = bytes.size() / kOracleRecordBytes * kOracleRecordBytes;
  if (whole != bytes.size()) {
    ThrowInputError(
        "{}: truncated oracleGeneral record at byte offset {} (record {}): {} bytes left, "
        "expected {}-byte records {{uint32 time, uint64 obj_id, uint32 obj_size, int64 "
        "next_access_vtime}}",
        path.string(), whole, whole / kOracleRecordBytes, bytes.size() - whole, kOracleRecordBytes);
  }
  RequestSequence seq = NamedSequence(path);
  const size_t n = bytes.size() / kOracleRecordBytes;
  seq.pages.reserve(n);
  StepBuilder steps(seq);
  for (size_t r = 0; r < n; ++r) {
    const char* in = bytes.data() + r * kOracleRecordBytes;
    uint32_t time = 0;
    uint64_t id = 0;
    uint32_t size = 0;
    std::memcpy(&time, in, 4);
    std::memcpy(&id, in + 4, 8);
    std::memcpy(&size, in + 12, 4);
    CheckSize(path, fmt::format("record {} (byte offset {})", r, r * kOracleRecordBytes), size, seq,
              r == 0);
    steps.Add(time, id);
  }
  steps.Close();
  return seq;
}

RequestSequence ReadTxtIds(const std::filesystem::path& path) {
  const std::string text = ReadFileToString(path);
  RequestSequence seq = NamedSequence(path);
  ForEachLine(text, [&](int64_t line_no, std::string_view line) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) return;
    uint64_t id = 0;
    bool ok = false;
    if (line.size() > 2 && line[0] == '0' && (line[1] == 'x' || line[1] == 'X')) {
      ok = ParseWhole(line.substr(2), id, 16);
    } else if (line.size() > 1 && line[0] == '0') {
      ok = ParseWhole(line.substr(1), id, 8);
    } else {
      ok = ParseWhole(line, id);
    }
    if (!ok) {
      ThrowInputError(
          "{}: line {} is '{}', expected one object id (a non-negative integer: decimal, 0x hex "
          "or 0 octal, as libCacheSim's txt reader with obj-id-is-num)",
          path.string(), line_no, line);
    }
    seq.step_position.push_back(static_cast<int64_t>(seq.pages.size()));
    seq.pages.push_back(id);
    seq.step_begin.push_back(static_cast<int64_t>(seq.pages.size()));
  });
  return seq;
}

std::vector<RequestSequence> LoadPagingInput(const std::string& path,
                                             InputFormat format,
                                             const ExtractOptions& extract) {
  if (format == InputFormat::kAuto) {
    format = DetectInputFormat(path);
    if (format == InputFormat::kTxt) {
      try {
        return {ReadTxtIds(path)};
      } catch (const InputError& e) {
        ThrowInputError(
            "{} (read as libCacheSim txt because of its .txt name; a kvsim requests file starts "
            "with 'kvsim-requests 1'; --input-format chooses)",
            e.what());
      }
    }
  }
  switch (format) {
    case InputFormat::kTrace:
    case InputFormat::kRequests: {
      const InputFormat found = SniffContent(path);
      if (found != format) {
        ThrowInputError("{}: --input-format {} but the file {}", path, InputFormatName(format),
                        format == InputFormat::kTrace
                            ? "does not start with the HDF5 signature"
                            : "does not start with the header 'kvsim-requests 1'");
      }
      return LoadRequestStreams(path, extract);
    }
    case InputFormat::kCsv:
      return {ReadLibCacheSimCsv(path)};
    case InputFormat::kOracleGeneral:
      return {ReadOracleGeneralSequence(path)};
    case InputFormat::kTxt:
      return {ReadTxtIds(path)};
    case InputFormat::kAuto:
      break;
  }
  ThrowInputError("{}: no format", path);
}

}  // namespace kvsim::paging
