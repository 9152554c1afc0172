#include "sim/paging/request_sequence.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>
#include <unordered_map>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::paging {
namespace {

constexpr const char* kMagic = "kvsim-requests 1";

static_assert(std::endian::native == std::endian::little,
              "oracleGeneral records are written by memcpy of little-endian integers");

// Parses a whole decimal integer token; false if `token` is not one.
template <typename Int>
bool ParseInt(std::string_view token, Int& value) {
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, value);
  return ec == std::errc() && ptr == end;
}

std::vector<std::string_view> SplitWords(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

}  // namespace

void RequestSequence::AddStep(int64_t position, std::span<const uint64_t> step_pages) {
  KVSIM_ASSERT(
      std::adjacent_find(step_pages.begin(), step_pages.end(),
                         [](uint64_t a, uint64_t b) { return a >= b; }) == step_pages.end(),
      "step {} pages not strictly ascending", position);
  step_position.push_back(position);
  pages.insert(pages.end(), step_pages.begin(), step_pages.end());
  step_begin.push_back(static_cast<int64_t>(pages.size()));
}

int64_t RequestSequence::MaxStepSize() const {
  int64_t max_size = 0;
  for (size_t s = 0; s + 1 < step_begin.size(); ++s) {
    max_size = std::max(max_size, step_begin[s + 1] - step_begin[s]);
  }
  return max_size;
}

void ComputeNextUse(DenseRequests& dense) {
  std::vector<int64_t> seen_next(dense.num_pages(), kNeverAgain);
  dense.next_use.assign(dense.page.size(), kNeverAgain);
  for (int64_t i = dense.requests() - 1; i >= 0; --i) {
    const uint32_t p = dense.page[static_cast<size_t>(i)];
    dense.next_use[static_cast<size_t>(i)] = seen_next[p];
    seen_next[p] = i;
  }
}

DenseRequests Densify(const RequestSequence& sequence) {
  DenseRequests dense;
  dense.page_bytes = sequence.page_bytes;
  dense.step_begin = sequence.step_begin;
  dense.page.resize(sequence.pages.size());
  std::unordered_map<uint64_t, uint32_t> ids;
  ids.reserve(sequence.pages.size() / 4 + 16);
  for (size_t i = 0; i < sequence.pages.size(); ++i) {
    const auto [it, inserted] =
        ids.try_emplace(sequence.pages[i], static_cast<uint32_t>(dense.original_id.size()));
    if (inserted) dense.original_id.push_back(sequence.pages[i]);
    dense.page[i] = it->second;
  }
  ComputeNextUse(dense);
  return dense;
}

void WriteRequestsFile(const std::filesystem::path& path,
                       std::span<const RequestSequence> streams) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << kMagic << '\n';
  for (const RequestSequence& seq : streams) {
    out << fmt::format("stream {} page_tokens {} page_bytes {} steps {}\n", seq.stream,
                       seq.page_tokens, seq.page_bytes, seq.steps());
    for (int64_t s = 0; s < seq.steps(); ++s) {
      out << seq.step_position[static_cast<size_t>(s)] << ':';
      for (int64_t i = seq.step_begin[static_cast<size_t>(s)];
           i < seq.step_begin[static_cast<size_t>(s) + 1]; ++i) {
        out << ' ' << seq.pages[static_cast<size_t>(i)];
      }
      out << '\n';
    }
  }
  file.Commit();
}

std::vector<RequestSequence> ReadRequestsFile(const std::filesystem::path& path) {
  const std::string text = ReadFileToString(path);
  std::vector<RequestSequence> streams;
  int64_t steps_left = 0;
  int64_t line_no = 0;
  size_t pos = 0;
  std::vector<uint64_t> step_pages;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    const auto words = SplitWords(line);
    if (line_no == 1) {
      if (words.size() != 2 || words[0] != "kvsim-requests" || words[1] != "1") {
        ThrowInputError("{}: line 1 is '{}', expected the header '{}'", path.string(), line,
                        kMagic);
      }
      continue;
    }
    if (words.empty()) continue;
    if (steps_left == 0) {
      RequestSequence seq;
      int64_t steps = 0;
      if (words.size() != 8 || words[0] != "stream" || words[2] != "page_tokens" ||
          !ParseInt(words[3], seq.page_tokens) || seq.page_tokens < 1 || words[4] != "page_bytes" ||
          !ParseInt(words[5], seq.page_bytes) || seq.page_bytes < 0 || words[6] != "steps" ||
          !ParseInt(words[7], steps) || steps < 0) {
        ThrowInputError(
            "{}: line {} is '{}', expected 'stream NAME page_tokens P page_bytes N steps S' "
            "with P >= 1, N >= 0, S >= 0",
            path.string(), line_no, line);
      }
      seq.stream = std::string(words[1]);
      streams.push_back(std::move(seq));
      steps_left = steps;
      continue;
    }
    int64_t position = 0;
    if (words[0].empty() || words[0].back() != ':' ||
        !ParseInt(words[0].substr(0, words[0].size() - 1), position)) {
      ThrowInputError("{}: line {} starts with '{}', expected a decode position followed by ':'",
                      path.string(), line_no, words[0]);
    }
    step_pages.clear();
    for (size_t w = 1; w < words.size(); ++w) {
      uint64_t page = 0;
      if (!ParseInt(words[w], page)) {
        ThrowInputError("{}: line {} has page '{}', expected a non-negative integer", path.string(),
                        line_no, words[w]);
      }
      if (!step_pages.empty() && page <= step_pages.back()) {
        ThrowInputError("{}: line {} has page {} after {}, expected strictly ascending pages",
                        path.string(), line_no, page, step_pages.back());
      }
      step_pages.push_back(page);
    }
    streams.back().AddStep(position, step_pages);
    --steps_left;
  }
  if (line_no == 0)
    ThrowInputError("{}: empty file, expected the header '{}'", path.string(), kMagic);
  if (steps_left != 0) {
    ThrowInputError("{}: stream '{}' ends after {} of its declared steps, expected {} more lines",
                    path.string(), streams.back().stream, streams.back().steps(), steps_left);
  }
  return streams;
}

void WriteLibCacheSimCsv(const std::filesystem::path& path, const RequestSequence& sequence) {
  AtomicTextFile file(path);
  auto& out = file.out();
  out << "time,obj_id,obj_size\n";
  for (int64_t s = 0; s < sequence.steps(); ++s) {
    for (int64_t i = sequence.step_begin[static_cast<size_t>(s)];
         i < sequence.step_begin[static_cast<size_t>(s) + 1]; ++i) {
      out << sequence.step_position[static_cast<size_t>(s)] << ','
          << sequence.pages[static_cast<size_t>(i)] << ',' << sequence.page_bytes << '\n';
    }
  }
  file.Commit();
}

void WriteOracleGeneral(const std::filesystem::path& path, const RequestSequence& sequence) {
  if (sequence.page_bytes > std::numeric_limits<uint32_t>::max()) {
    ThrowInputError("{}: page_bytes {} does not fit oracleGeneral's uint32 obj_size", path.string(),
                    sequence.page_bytes);
  }
  const DenseRequests dense = Densify(sequence);
  std::string bytes(kOracleRecordBytes * sequence.pages.size(), '\0');
  char* out = bytes.data();
  for (int64_t s = 0; s < sequence.steps(); ++s) {
    const int64_t position = sequence.step_position[static_cast<size_t>(s)];
    if (position < 0 || position > std::numeric_limits<uint32_t>::max()) {
      ThrowInputError("{}: decode position {} does not fit oracleGeneral's uint32 clock_time",
                      path.string(), position);
    }
    for (int64_t i = sequence.step_begin[static_cast<size_t>(s)];
         i < sequence.step_begin[static_cast<size_t>(s) + 1]; ++i) {
      const auto clock_time = static_cast<uint32_t>(position);
      const uint64_t obj_id = sequence.pages[static_cast<size_t>(i)];
      const auto obj_size = static_cast<uint32_t>(sequence.page_bytes);
      const int64_t next = dense.next_use[static_cast<size_t>(i)];
      const int64_t next_vtime = next == kNeverAgain ? -1 : next + 1;  // 1-based, as traceConv
      std::memcpy(out, &clock_time, 4);
      std::memcpy(out + 4, &obj_id, 8);
      std::memcpy(out + 12, &obj_size, 4);
      std::memcpy(out + 16, &next_vtime, 8);
      out += kOracleRecordBytes;
    }
  }
  WriteFileAtomically(path, bytes);
}

std::vector<OracleRecord> ReadOracleGeneral(const std::filesystem::path& path) {
  const std::string bytes = ReadFileToString(path);
  if (bytes.size() % kOracleRecordBytes != 0) {
    const size_t whole = bytes.size() / kOracleRecordBytes * kOracleRecordBytes;
    ThrowInputError(
        "{}: size {} bytes is not a multiple of the {}-byte oracleGeneral record: truncated "
        "record at byte offset {}",
        path.string(), bytes.size(), kOracleRecordBytes, whole);
  }
  std::vector<OracleRecord> records(bytes.size() / kOracleRecordBytes);
  const char* in = bytes.data();
  for (OracleRecord& r : records) {
    std::memcpy(&r.clock_time, in, 4);
    std::memcpy(&r.obj_id, in + 4, 8);
    std::memcpy(&r.obj_size, in + 12, 4);
    std::memcpy(&r.next_access_vtime, in + 16, 8);
    in += kOracleRecordBytes;
  }
  return records;
}

}  // namespace kvsim::paging
