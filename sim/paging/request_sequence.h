#pragma once
// Page-request sequences: what paging experiments replay. Format and semantics:
// sim/paging/README.md.
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace kvsim::paging {

// One stream of set requests. Step s requests the pages
// pages[step_begin[s] .. step_begin[s+1]), strictly ascending (a set, linearised in ascending
// page id, which is ascending position since page = floor(position / page_tokens)).
struct RequestSequence {
  std::string stream = "merged";  // "merged" or "L<layer>H<kv_head>"
  int64_t page_tokens = 1;        // tokens per page
  int64_t page_bytes = 0;         // bytes fetched per faulted page (K and V in the model dtype)
  std::vector<int64_t> step_position;  // decode position of each step
  std::vector<int64_t> step_begin{0};  // steps() + 1 offsets into `pages`
  std::vector<uint64_t> pages;

  int64_t steps() const { return static_cast<int64_t>(step_position.size()); }
  int64_t requests() const { return static_cast<int64_t>(pages.size()); }
  // Appends one step; `step_pages` must be strictly ascending.
  void AddStep(int64_t position, std::span<const uint64_t> step_pages);
  // Largest |R_t|.
  int64_t MaxStepSize() const;
  friend bool operator==(const RequestSequence&, const RequestSequence&) = default;
};

inline constexpr int64_t kNeverAgain = std::numeric_limits<int64_t>::max();

// A sequence with pages renumbered densely 0..num_pages-1 in order of first request, plus the
// index of each request's next request of the same page (kNeverAgain if none). This is what the
// engine replays; building it is O(n) expected.
struct DenseRequests {
  std::vector<uint32_t> page;
  std::vector<int64_t> step_begin{0};
  std::vector<int64_t> next_use;
  std::vector<uint64_t> original_id;  // dense id -> page id of the RequestSequence
  int64_t page_bytes = 0;

  int64_t requests() const { return static_cast<int64_t>(page.size()); }
  int64_t steps() const { return static_cast<int64_t>(step_begin.size()) - 1; }
  uint32_t num_pages() const { return static_cast<uint32_t>(original_id.size()); }
};
DenseRequests Densify(const RequestSequence& sequence);
// Fills next_use from page (used by Densify; exposed for sequences built directly).
void ComputeNextUse(DenseRequests& dense);

// The plain kvsim format (README.md): several streams per file. Written atomically.
void WriteRequestsFile(const std::filesystem::path& path, std::span<const RequestSequence> streams);
// Throws InputError naming the file, the line and what was expected.
std::vector<RequestSequence> ReadRequestsFile(const std::filesystem::path& path);

// libCacheSim csv: header `time,obj_id,obj_size`, one row per request: time = decode position of
// the step, obj_id = page id, obj_size = page_bytes. Written atomically.
void WriteLibCacheSimCsv(const std::filesystem::path& path, const RequestSequence& sequence);

// libCacheSim oracleGeneral: packed little-endian 24-byte records {uint32 clock_time = decode
// position, uint64 obj_id = page id, uint32 obj_size = page_bytes, int64 next_access_vtime =
// 1-based index of the next request of the same page in this file (the request count at that
// request, as libCacheSim's traceConv writes it: convert_to_oracleGeneral's "reference count
// starts with 1"), -1 if none}. Belady is indifferent to the offset; the policies that compare
// it with the request count (Sieve-Belady, LRU-Belady, FIFO-Belady, LeCaR) are not.
struct OracleRecord {
  uint32_t clock_time = 0;
  uint64_t obj_id = 0;
  uint32_t obj_size = 0;
  int64_t next_access_vtime = -1;
  friend bool operator==(const OracleRecord&, const OracleRecord&) = default;
};
inline constexpr size_t kOracleRecordBytes = 24;
void WriteOracleGeneral(const std::filesystem::path& path, const RequestSequence& sequence);
std::vector<OracleRecord> ReadOracleGeneral(const std::filesystem::path& path);

}  // namespace kvsim::paging
