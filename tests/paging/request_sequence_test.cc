// Request files: the plain kvsim format round-trips, bad files are rejected with the file, line
// and expectation named, and the libCacheSim writers produce what libCacheSim reads.
#include "sim/paging/request_sequence.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "tests/common/test_util.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

using kvsim::testing::TempDir;

TEST(RequestsFile, RoundTripsSeveralStreams) {
  TempDir dir;
  std::vector<RequestSequence> streams = {testing::RandomSequence(1, 30, 9, 3),
                                          testing::RandomSequence(2, 5, 4, 2)};
  streams[0].stream = "L0H1";
  streams[0].page_tokens = 16;
  streams[0].page_bytes = 4096;
  streams[1].AddStep(999, std::vector<uint64_t>{});  // an empty step survives
  WriteRequestsFile(dir.File("r.txt"), streams);
  EXPECT_EQ(ReadRequestsFile(dir.File("r.txt")), streams);
}

void ExpectRejected(const std::string& contents, const std::string& needle) {
  TempDir dir;
  {
    std::ofstream out(dir.File("bad.txt"));
    out << contents;
  }
  try {
    ReadRequestsFile(dir.File("bad.txt"));
    FAIL() << "accepted: " << contents;
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.txt"), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(RequestsFile, RejectsMalformedFilesNamingLineAndExpectation) {
  ExpectRejected("kvsim-requests 2\n", "line 1");
  ExpectRejected("kvsim-requests 1\nstream a page_tokens 0 page_bytes 4 steps 1\n5: 1\n", "P >= 1");
  ExpectRejected("kvsim-requests 1\nstream a page_tokens 1 page_bytes 4 steps 1\n5: 3 2\n",
                 "line 3 has page 2 after 3");
  ExpectRejected("kvsim-requests 1\nstream a page_tokens 1 page_bytes 4 steps 1\n5 3\n",
                 "followed by ':'");
  ExpectRejected("kvsim-requests 1\nstream a page_tokens 1 page_bytes 4 steps 2\n5: 1\n",
                 "expected 1 more lines");
  ExpectRejected("kvsim-requests 1\nstream a page_tokens 1 page_bytes 4 steps 1\n5: x\n",
                 "page 'x'");
}

TEST(LibCacheSimCsv, OneRowPerRequestWithHeader) {
  TempDir dir;
  RequestSequence seq;
  seq.page_bytes = 512;
  seq.AddStep(7, std::vector<uint64_t>{1, 4});
  seq.AddStep(8, std::vector<uint64_t>{4});
  WriteLibCacheSimCsv(dir.File("r.csv"), seq);
  EXPECT_EQ(ReadFileToString(dir.File("r.csv")),
            "time,obj_id,obj_size\n7,1,512\n7,4,512\n8,4,512\n");
}

// next_access_vtime counts requests from 1, as libCacheSim's traceConv writes it (the reversed
// count n - c of convert_to_oracleGeneral, c the 0-based index from the end).
TEST(OracleGeneral, RecordsCarryOneBasedNextAccessIndices) {
  TempDir dir;
  const RequestSequence seq = testing::RandomSequence(4, 200, 15, 4);
  WriteOracleGeneral(dir.File("r.bin"), seq);
  EXPECT_EQ(std::filesystem::file_size(dir.File("r.bin")), 24 * seq.pages.size());
  const std::vector<OracleRecord> records = ReadOracleGeneral(dir.File("r.bin"));
  ASSERT_EQ(records.size(), seq.pages.size());
  size_t i = 0;
  for (int64_t s = 0; s < seq.steps(); ++s) {
    for (int64_t r = seq.step_begin[s]; r < seq.step_begin[s + 1]; ++r, ++i) {
      EXPECT_EQ(records[i].clock_time, static_cast<uint32_t>(seq.step_position[s]));
      EXPECT_EQ(records[i].obj_id, seq.pages[r]);
      EXPECT_EQ(records[i].obj_size, 64u);
      int64_t next = -1;  // brute force: scan forward for the same object
      for (size_t j = i + 1; j < records.size(); ++j) {
        if (records[j].obj_id == records[i].obj_id) {
          next = static_cast<int64_t>(j) + 1;
          break;
        }
      }
      EXPECT_EQ(records[i].next_access_vtime, next) << "record " << i;
    }
  }
}

TEST(OracleGeneral, RejectsTruncatedFiles) {
  TempDir dir;
  WriteFileAtomically(dir.File("r.bin"), std::string(30, '\0'));
  EXPECT_THROW(ReadOracleGeneral(dir.File("r.bin")), InputError);
}

}  // namespace
}  // namespace kvsim::paging
