// `kvsim requests` and `kvsim paging` end to end: outputs match the library, CSV columns match
// analysis/RESULTS_FORMAT.md, bad input exits 2 naming the problem and leaves no output.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "common/atomic_file.h"
#include "sim/paging/extract.h"
#include "sim/paging/request_sequence.h"
#include "tests/common/test_util.h"
#include "traces/trace_io.h"

namespace kvsim {
namespace {

using testing::RunKvsim;
using testing::ShellQuote;
using testing::TempDir;

// A 2-layer random trace written as float32 so extraction from the file is exact.
std::string WriteTinyTrace(const TempDir& dir) {
  traces::TraceMeta meta;
  meta.shape = {.name = "tiny",
                .layers = 2,
                .q_heads = 4,
                .kv_heads = 2,
                .head_dim = 8,
                .rope_theta = 10000.0,
                .kv_bytes_per_element = 2};
  meta.prompt_len = 8;
  meta.total_len = 40;
  meta.storage = traces::StorageType::kFloat32;
  meta.source = "test:paging";
  meta.token_ids.assign(40, 1);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<traces::LayerTensors> layers(2);
  for (auto& layer : layers) {
    layer.queries = HeadTensor(4, 40, 8);
    layer.keys = HeadTensor(2, 40, 8);
    layer.values = HeadTensor(2, 40, 8);
    for (size_t i = 0; i < layer.queries.size(); ++i) layer.queries.data()[i] = normal(rng);
    for (size_t i = 0; i < layer.keys.size(); ++i) layer.keys.data()[i] = normal(rng);
  }
  const std::string path = dir.File("tiny.h5");
  traces::TraceWriterOptions options;
  options.storage = traces::StorageType::kFloat32;
  traces::WriteTrace(path, traces::Trace(meta, std::move(layers)), options);
  return path;
}

std::vector<std::string> Lines(const std::string& path) {
  std::istringstream in(ReadFileToString(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// paging_mrc.csv rows without their last column (requests_per_second, a timing).
// Stream "s", pages of 10 bytes, one request per step: 1 2 3 1 4 2 5 (5 distinct pages).
void WriteSevenRequests(const std::string& path) {
  paging::RequestSequence seq;
  seq.stream = "s";
  seq.page_bytes = 10;
  for (uint64_t p : {1, 2, 3, 1, 4, 2, 5}) seq.AddStep(0, std::vector<uint64_t>{p});
  paging::WriteRequestsFile(path, std::vector<paging::RequestSequence>{seq});
}

std::vector<std::string> MrcRows(const std::string& path) {
  std::vector<std::string> rows = Lines(path);
  for (auto& row : rows) row.erase(row.rfind(','));
  return rows;
}

TEST(RequestsCli, PlainOutputEqualsLibraryExtraction) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const auto r = RunKvsim("requests " + ShellQuote(trace) + " -o " + ShellQuote(dir.File("r.txt")) +
                          " --rule coverage:0.7 --streams both");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  paging::ExtractOptions options;
  options.rule = paging::RequestRule::kCoverage;
  options.coverage = 0.7;
  options.streams = paging::StreamSet::kBoth;
  EXPECT_EQ(paging::ReadRequestsFile(dir.File("r.txt")),
            paging::ExtractRequests(traces::ReadTrace(trace), options));
}

TEST(RequestsCli, LibCacheSimFormatsWriteOneFilePerStream) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  auto r = RunKvsim("requests " + ShellQuote(trace) + " -o " + ShellQuote(dir.File("r.bin")) +
                    " --format oracle --rule topk:4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 2 layers x 2 KV heads, 32 decode steps of 4 requests each.
  for (const char* stream : {"L0H0", "L0H1", "L1H0", "L1H1"}) {
    EXPECT_EQ(paging::ReadOracleGeneral(dir.File(std::string("r.") + stream + ".bin")).size(),
              32u * 4u);
  }
  r = RunKvsim("requests " + ShellQuote(trace) + " -o " + ShellQuote(dir.File("m.csv")) +
               " --format csv --rule topk:4 --streams merged --page-tokens 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = Lines(dir.File("m.csv"));
  ASSERT_GE(lines.size(), 33u);
  EXPECT_EQ(lines[0], "time,obj_id,obj_size");
  // 4-token pages over 2 layers x 2 KV heads: 4 tokens * (K + V) * 8 dims * 2 bytes * 4 = 512.
  EXPECT_EQ(lines[1].substr(lines[1].rfind(',') + 1), "512");
}

TEST(PagingCli, WritesTheDocumentedColumnsForEveryPolicyModeAndSize) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const auto r = RunKvsim("paging " + ShellQuote(trace) + " -o " + ShellQuote(dir.path()) +
                          " --rule topk:4 --cache-sizes 4,6,10 --error-rates 0,0.25 --seeds 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto mrc = Lines(dir.File("paging_mrc.csv"));
  ASSERT_FALSE(mrc.empty());
  EXPECT_EQ(mrc[0],
            "stream,mode,policy,cache_size,requests,faults,miss_ratio,opt_faults,"
            "competitive_ratio,fetched_bytes,semantics,requests_per_second");
  // 4 streams x 1 mode (default: offload only) x 16 policies x 3 sizes.
  EXPECT_EQ(mrc.size(), 1u + 4 * 1 * 16 * 3);
  // requests_per_second is filled for every replayed row.
  EXPECT_NE(mrc[1].back(), ',') << mrc[1];
  const auto pred = Lines(dir.File("paging_predictions.csv"));
  EXPECT_EQ(pred[0],
            "stream,policy,cache_size,error_rate,seed,faults,opt_faults,eta0,eta1,semantics");
  // 4 streams x 3 sizes x 4 prediction policies (discard-pred, phase-pred, mark0, mark0-rand)
  // x 2 rates x 2 seeds.
  EXPECT_EQ(pred.size(), 1u + 4 * 3 * 4 * 2 * 2);
  EXPECT_NE(r.out.find("L1H1"), std::string::npos);
}

// The per-type sweep: its two files, their headers and row counts, and bad rates refused.
TEST(PagingCli, PerTypeErrorSweepWritesEtaFiles) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const std::string out = ShellQuote(dir.path());
  auto r = RunKvsim("paging " + ShellQuote(trace) + " -o " + out +
                    " --rule topk:4 --streams merged --cache-sizes 4,6 --policies "
                    "lru,discard-pred,mark0 --eta0-rates 0.5 --eta1-rates 0.1,0.5 "
                    "--adversarial-budgets 0.1 --seeds 2 --prefix t");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto eta = Lines(dir.File("t_eta.csv"));
  ASSERT_FALSE(eta.empty());
  EXPECT_EQ(eta[0],
            "stream,policy,cache_size,error_model,rate,seed,faults,opt_faults,competitive_ratio,"
            "eta0,eta1,semantics");
  // 1 stream x 2 sizes x 2 prediction policies x (perfect + 1 + 2 + 1 models) x 2 seeds.
  EXPECT_EQ(eta.size(), 1u + 2 * 2 * 5 * 2);
  const auto fit = Lines(dir.File("t_eta_fit.csv"));
  ASSERT_EQ(fit.size(), 1u + 2 * 2);
  EXPECT_EQ(fit[0],
            "stream,policy,cache_size,opt_faults,perfect_faults,consistency_ratio,eta0_slope,"
            "eta0_intercept,eta0_points,eta1_slope,eta1_intercept,eta1_points,"
            "adversarial_worst_ratio,adversarial_worst_budget,adversarial_points,semantics");
  EXPECT_NE(r.out.find("eta0_slope"), std::string::npos) << r.out;
  r = RunKvsim("paging " + ShellQuote(trace) + " -o " + out +
               " --rule topk:4 --cache-sizes 4 --policies mark0 --eta0-rates 2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--eta0-rates: 2 is outside [0, 1]"), std::string::npos) << r.err;
  r = RunKvsim("paging " + ShellQuote(trace) + " -o " + out +
               " --rule topk:4 --cache-sizes 4 --policies lru --adversarial-budgets 0.1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("names no prediction policy"), std::string::npos) << r.err;
}

TEST(PagingCli, ReadsRequestsFilesAndReportsOpt) {
  TempDir dir;
  WriteSevenRequests(dir.File("r.txt"));
  const auto r =
      RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + ShellQuote(dir.path()) +
               " --cache-sizes 3 --policies lru,opt,belady --modes offload,evict");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto mrc = MrcRows(dir.File("paging_mrc.csv"));
  ASSERT_EQ(mrc.size(), 5u);
  // LRU 6 faults; Belady 5 (at page 4 it evicts 1, never used again): 60 and 50 bytes.
  EXPECT_EQ(mrc[1], "s,offload,lru,3,7,6,0.8571428571428571,5,1.2,60,step");
  EXPECT_EQ(mrc[2], "s,offload,opt,3,7,5,0.7142857142857143,5,1,50,step");
  // Pure eviction: LRU loses page 2 (1 miss); the flow optimum keeps 1, 2 and drops 3: 0.
  EXPECT_EQ(mrc[3], "s,evict,lru,3,7,1,0.14285714285714285,0,,0,step");
  EXPECT_EQ(mrc[4], "s,evict,opt,3,7,0,0,0,,0,step");
  // One request per step: the classic semantics gives the same counts.
  const auto classic =
      RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + ShellQuote(dir.path()) +
               " --cache-sizes 3 --policies lru,opt --semantics classic");
  ASSERT_EQ(classic.exit_code, 0) << classic.err;
  EXPECT_EQ(MrcRows(dir.File("paging_mrc.csv"))[1],
            "s,offload,lru,3,7,6,0.8571428571428571,5,1.2,60,classic");
  const auto bad = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " +
                            ShellQuote(dir.path()) + " --semantics sequential");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--semantics 'sequential'"), std::string::npos) << bad.err;
}

TEST(PagingCli, TakesLibCacheSimNamesAndCreatesTheOutputFolder) {
  TempDir dir;
  WriteSevenRequests(dir.File("r.txt"));
  const std::string out = (dir.path() / "new" / "folder").string();
  const auto r = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + ShellQuote(out) +
                          " --cache-sizes 3 --policies LRU,belady --modes offload");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto mrc = MrcRows(out + "/paging_mrc.csv");
  ASSERT_EQ(mrc.size(), 3u);
  EXPECT_EQ(mrc[1], "s,offload,lru,3,7,6,0.8571428571428571,5,1.2,60,step");
  EXPECT_EQ(mrc[2], "s,offload,opt,3,7,5,0.7142857142857143,5,1,50,step");
  // libCacheSim's spellings of SIEVE, S3-FIFO, 2Q and ARC; rows use the registered names.
  // SIEVE, k = 3: 1 2 3, 1 hits; 4 evicts 2 (1 visited), 2 evicts 3, 5 evicts 4: 6 faults.
  const auto lcs = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + ShellQuote(out) +
                            " --cache-sizes 3 --policies Sieve,S3-FIFO,2Q,ARC --modes offload" +
                            " --semantics classic");
  ASSERT_EQ(lcs.exit_code, 0) << lcs.err;
  const auto lcs_mrc = MrcRows(out + "/paging_mrc.csv");
  ASSERT_EQ(lcs_mrc.size(), 5u);
  EXPECT_EQ(lcs_mrc[1], "s,offload,sieve,3,7,6,0.8571428571428571,5,1.2,60,classic");
  EXPECT_EQ(lcs_mrc[2].rfind("s,offload,s3fifo,3,7,", 0), 0u) << lcs_mrc[2];
  EXPECT_EQ(lcs_mrc[3].rfind("s,offload,twoq,3,7,", 0), 0u) << lcs_mrc[3];
  EXPECT_EQ(lcs_mrc[4].rfind("s,offload,arc,3,7,", 0), 0u) << lcs_mrc[4];
  const auto unknown = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " +
                                ShellQuote(out) + " --policies sievex");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("unknown paging policy 'sievex'"), std::string::npos) << unknown.err;
}

TEST(PagingCli, BadInputExitsTwoNamingItAndLeavesNoOutput) {
  TempDir dir;
  WriteFileAtomically(dir.File("junk.txt"), "hello\n");
  std::filesystem::create_directory(dir.path() / "out");
  const std::string out = ShellQuote((dir.path() / "out").string());
  auto r = RunKvsim("paging " + ShellQuote(dir.File("junk.txt")) + " -o " + out);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("junk.txt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("kvsim-requests 1"), std::string::npos) << r.err;
  paging::RequestSequence seq;
  seq.AddStep(0, std::vector<uint64_t>{1});
  paging::WriteRequestsFile(dir.File("r.txt"), std::vector<paging::RequestSequence>{seq});
  r = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + out + " --policies lru,nope");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'nope'"), std::string::npos) << r.err;
  r = RunKvsim("requests " + ShellQuote(dir.File("junk.txt")) + " -o " +
               ShellQuote(dir.File("out/x.txt")) + " --rule topk:0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--rule 'topk:0'"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() / "out"));
}

// kvsim requests -> csv / oracleGeneral -> kvsim paging gives, in classic semantics, the fault
// counts of paging the trace directly; malformed libCacheSim files exit 2 naming the problem.
TEST(PagingCli, LibCacheSimExportsReadBackWithTheSameFaults) {
  TempDir dir;
  const std::string trace = WriteTinyTrace(dir);
  const std::string flags = " --rule topk:4 --streams merged";
  for (const char* format : {"csv", "oracle"}) {
    const std::string file =
        dir.File(std::string("m.") + (format[0] == 'c' ? "csv" : "oracleGeneral.bin"));
    const auto r = RunKvsim("requests " + ShellQuote(trace) + " -o " + ShellQuote(file) +
                            " --format " + format + flags);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::string common = " --cache-sizes 2,5,9 --policies lru,fifo,sieve,opt --modes offload";
  auto faults = [&](const std::string& input, const std::string& extra) {
    const auto r =
        RunKvsim("paging " + ShellQuote(input) + " -o " + ShellQuote(dir.path()) + common + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> cols;
    for (const auto& line : Lines(dir.File("paging_mrc.csv"))) {
      // policy, cache_size, requests, faults, opt_faults
      std::vector<std::string> f;
      std::stringstream in(line);
      for (std::string x; std::getline(in, x, ',');) f.push_back(x);
      cols.push_back(f[2] + "," + f[3] + "," + f[4] + "," + f[5] + "," + f[7]);
    }
    return cols;
  };
  const std::string classic = " --semantics classic";
  const auto direct = faults(trace, flags + classic);
  ASSERT_EQ(direct.size(), 1u + 4 * 3);
  EXPECT_EQ(faults(dir.File("m.csv"), classic), direct);
  EXPECT_EQ(faults(dir.File("m.oracleGeneral.bin"), classic), direct);
  EXPECT_EQ(faults(dir.File("m.oracleGeneral.bin"), classic + " --input-format oracleGeneral"),
            direct);
  // Step semantics also agree: consecutive rows of one decode position form its step again.
  const auto step_direct = faults(trace, flags + " --semantics step");
  EXPECT_EQ(faults(dir.File("m.csv"), " --semantics step"), step_direct);

  WriteFileAtomically(dir.File("cut.oracleGeneral"), std::string(30, '\0'));
  auto bad = RunKvsim("paging " + ShellQuote(dir.File("cut.oracleGeneral")) + " -o " +
                      ShellQuote(dir.path()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("cut.oracleGeneral: truncated oracleGeneral record at byte offset 24"),
            std::string::npos)
      << bad.err;
  WriteFileAtomically(dir.File("bad.csv"), "time,obj_id,obj_size\n1,2,x\n");
  bad = RunKvsim("paging " + ShellQuote(dir.File("bad.csv")) + " -o " + ShellQuote(dir.path()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("line 2 field 3 (obj_size) is 'x'"), std::string::npos) << bad.err;
  bad = RunKvsim("paging " + ShellQuote(dir.File("bad.csv")) + " -o " + ShellQuote(dir.path()) +
                 " --input-format parquet");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--input-format 'parquet'"), std::string::npos) << bad.err;
  bad = RunKvsim("paging " + ShellQuote(dir.File("m.csv")) + " -o " + ShellQuote(dir.path()) +
                 " --input-format requests");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("m.csv: --input-format requests but the file does not start with the "
                         "header 'kvsim-requests 1'"),
            std::string::npos)
      << bad.err;
}

TEST(PagingCli, CacheSizeSpellingsPrefixAndRate) {
  TempDir dir;
  WriteSevenRequests(dir.File("r.txt"));
  // 5 distinct pages of 10 bytes: 0.6f -> 3 pages, 30B -> 3 pages, 1KiB -> 102 pages.
  const auto r =
      RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " + ShellQuote(dir.path()) +
               " --cache-sizes 0.6f,30B,1KiB --policies lru --prefix run1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("paging_mrc.csv")));
  const auto mrc = MrcRows(dir.File("run1_mrc.csv"));
  ASSERT_EQ(mrc.size(), 4u);
  EXPECT_EQ(mrc[1], "s,offload,lru,3,7,6,0.8571428571428571,5,1.2,60,step");
  EXPECT_EQ(mrc[2], mrc[1]);
  EXPECT_EQ(mrc[3].rfind("s,offload,lru,102,7,5,", 0), 0u) << mrc[3];
  EXPECT_NE(r.out.find("Mreq/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("run1_mrc.csv"), std::string::npos) << r.out;
  for (const char* bad : {"--cache-sizes -0.5f", "--cache-sizes 10TB", "--prefix a/b"}) {
    const auto b = RunKvsim("paging " + ShellQuote(dir.File("r.txt")) + " -o " +
                            ShellQuote(dir.path()) + " " + bad);
    EXPECT_EQ(b.exit_code, 2) << bad;
    EXPECT_NE(b.err.find(std::string(bad).substr(0, std::string(bad).find(' '))), std::string::npos)
        << b.err;
  }
}

}  // namespace
}  // namespace kvsim
