// libCacheSim inputs of `kvsim paging`: csv and oracleGeneral exports read back as the sequence
// that was written (steps included), txt gives one request per step, the format is detected by
// content and name, and malformed files are refused naming the file, place and expectation.
#include "sim/paging/input_formats.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "tests/common/test_util.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

using kvsim::testing::TempDir;

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// Runs `read` on a file holding `contents` and expects an InputError containing every needle.
template <typename Reader>
void ExpectRejected(Reader read,
                    const std::string& name,
                    const std::string& contents,
                    const std::vector<std::string>& needles) {
  TempDir dir;
  Write(dir.File(name), contents);
  try {
    read(dir.File(name));
    FAIL() << "accepted: " << name;
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(name), std::string::npos) << what;
    for (const auto& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(PagingInputs, CsvAndOracleGeneralReadBackTheExportedSequence) {
  TempDir dir;
  RequestSequence seq = testing::RandomSequence(5, 40, 12, 4);
  seq.page_bytes = 640;
  WriteLibCacheSimCsv(dir.File("r.csv"), seq);
  WriteOracleGeneral(dir.File("r.oracleGeneral.bin"), seq);
  RequestSequence expected = seq;
  expected.stream = "r";
  EXPECT_EQ(ReadLibCacheSimCsv(dir.File("r.csv")), expected);
  expected.stream = "r.oracleGeneral";
  EXPECT_EQ(ReadOracleGeneralSequence(dir.File("r.oracleGeneral.bin")), expected);
}

TEST(PagingInputs, CsvWithoutHeaderAndTxtIds) {
  TempDir dir;
  // Same time, ids not ascending: 5 starts a new step; time 8 starts another.
  Write(dir.File("a.csv"), "7,3,10\r\n7,5,10\n7,5,10\n\n8,1,10\n");
  const RequestSequence csv = ReadLibCacheSimCsv(dir.File("a.csv"));
  EXPECT_EQ(csv.pages, (std::vector<uint64_t>{3, 5, 5, 1}));
  EXPECT_EQ(csv.step_begin, (std::vector<int64_t>{0, 2, 3, 4}));
  EXPECT_EQ(csv.step_position, (std::vector<int64_t>{7, 7, 8}));
  EXPECT_EQ(csv.page_bytes, 10);
  Write(dir.File("ids.txt"), "4\n\n 0x10 \n010\n4\n");
  const RequestSequence txt = ReadTxtIds(dir.File("ids.txt"));
  EXPECT_EQ(txt.pages, (std::vector<uint64_t>{4, 16, 8, 4}));
  EXPECT_EQ(txt.steps(), 4);
}

TEST(PagingInputs, DetectsByContentThenName) {
  TempDir dir;
  RequestSequence seq = testing::SequenceOf({1, 2, 1});
  WriteRequestsFile(dir.File("r.csv"), std::vector<RequestSequence>{seq});  // header wins
  EXPECT_EQ(DetectInputFormat(dir.File("r.csv")), InputFormat::kRequests);
  WriteLibCacheSimCsv(dir.File("x.csv"), seq);
  EXPECT_EQ(DetectInputFormat(dir.File("x.csv")), InputFormat::kCsv);
  WriteOracleGeneral(dir.File("x.oracleGeneral.bin"), seq);
  EXPECT_EQ(DetectInputFormat(dir.File("x.oracleGeneral.bin")), InputFormat::kOracleGeneral);
  Write(dir.File("ids.txt"), "1\n");
  EXPECT_EQ(DetectInputFormat(dir.File("ids.txt")), InputFormat::kTxt);
  ExpectRejected([](const std::string& p) { DetectInputFormat(p); }, "y.bin", std::string(24, '\0'),
                 {"--input-format"});
  EXPECT_EQ(ParseInputFormat("OracleGeneral", "--input-format"), InputFormat::kOracleGeneral);
  EXPECT_THROW(ParseInputFormat("parquet", "--input-format"), InputError);
}

TEST(PagingInputs, MalformedFilesNameTheProblem) {
  auto csv = [](const std::string& p) { ReadLibCacheSimCsv(p); };
  ExpectRejected(csv, "a.csv", "time,obj_id,obj_size\n1,2\n", {"line 2", "2 fields", "3"});
  ExpectRejected(csv, "b.csv", "1,2,3\n1,x,3\n", {"line 2", "obj_id", "'x'", "integer"});
  ExpectRejected(csv, "c.csv", "1,-2,3\n", {"line 1", "obj_id", "'-2'"});
  ExpectRejected(csv, "d.csv", "1,2,3\n2,3,4\n", {"line 2", "obj_size 4", "expected 3"});
  ExpectRejected(csv, "e.csv", "ts,id,size\n", {"line 1", "time", "header"});
  ExpectRejected([](const std::string& p) { ReadTxtIds(p); }, "f.txt", "1\nab\n",
                 {"line 2", "'ab'", "object id"});
  auto oracle = [](const std::string& p) { ReadOracleGeneralSequence(p); };
  // One whole record and 10 bytes of a second: refused at offset 24, record 1.
  ExpectRejected(oracle, "g.oracleGeneral", std::string(34, '\0'),
                 {"truncated", "offset 24", "record 1", "24-byte"});
  // Sizes that differ between records.
  std::string two(48, '\0');
  const uint32_t size = 7;
  std::memcpy(two.data() + 24 + 12, &size, 4);
  ExpectRejected(oracle, "h.oracleGeneral", two, {"record 1", "byte offset 24", "obj_size 7"});
  // An absurd size field allocates nothing: records are fixed-size, the field is one value.
  std::string huge(24, '\0');
  const uint32_t big = 0xffffffffu;
  std::memcpy(huge.data() + 12, &big, 4);
  TempDir dir;
  Write(dir.File("big.oracleGeneral"), huge);
  EXPECT_EQ(ReadOracleGeneralSequence(dir.File("big.oracleGeneral")).page_bytes, 0xffffffffLL);
}

}  // namespace
}  // namespace kvsim::paging
