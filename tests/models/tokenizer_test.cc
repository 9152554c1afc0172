#include "models/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/error.h"
#include "common/test_util.h"
#include "models/gguf.h"

namespace kvsim::models {
namespace {

const std::string kDataDir = std::string(KVSIM_SOURCE_DIR) + "/models/data/stories260K";

const Tokenizer& Llama2cTokenizer() {
  static const Tokenizer tokenizer = LoadLlama2cTokenizer(kDataDir + "/tok512.bin", 512);
  return tokenizer;
}
const Tokenizer& GgufTokenizer() {
  static const Tokenizer tokenizer = *LoadGgufLlama(kDataDir + "/stories260K.gguf").tokenizer;
  return tokenizer;
}

TEST(Tokenizer, EncodesOnceUponATimeAsLlama2c) {
  // PROVENANCE.md: llama2.c encode with BOS and the dummy prefix.
  const std::vector<int32_t> expected = {1, 403, 407, 261, 378};
  EXPECT_EQ(Llama2cTokenizer().Encode("Once upon a time", true, false), expected);
  EXPECT_EQ(GgufTokenizer().Encode("Once upon a time", true, false), expected);
  EXPECT_EQ(GgufTokenizer().Encode("Once upon a time", true, true).back(), 2);
}

TEST(Tokenizer, GgufAndLlama2cVocabulariesEncodeAlike) {
  const std::string texts[] = {"", "Lily's mom said, \"Let's go!\"\n",
                               "caf\xC3\xA9 \xE2\x98\x83 42", "  two  spaces",
                               "\x7f\x01 control bytes"};
  for (const std::string& text : texts) {
    EXPECT_EQ(Llama2cTokenizer().Encode(text, true, false),
              GgufTokenizer().Encode(text, true, false))
        << text;
  }
}

TEST(Tokenizer, DecodeRoundTripsEncodedText) {
  const std::string texts[] = {"Once upon a time, there was a little girl named Lily.",
                               "She said: \"I want 3 balls!\"\n\nThe end.",
                               "caf\xC3\xA9 \xE2\x98\x83 and \xF0\x9F\x98\x80 use byte fallback",
                               "  leading spaces", "x"};
  for (const Tokenizer* t : {&Llama2cTokenizer(), &GgufTokenizer()}) {
    for (const std::string& text : texts) {
      EXPECT_EQ(t->Decode(t->Encode(text, true, false)), text);
    }
  }
}

TEST(Tokenizer, UnknownCharactersFallBackToByteTokens) {
  // U+2603 (snowman) is not in the 512-token vocabulary: its three UTF-8 bytes become
  // <0xE2> <0x98> <0x83>, i.e. ids byte + 3.
  const auto ids = GgufTokenizer().Encode("\xE2\x98\x83", false, false);
  ASSERT_GE(ids.size(), 3u);
  const std::vector<int32_t> tail(ids.end() - 3, ids.end());
  EXPECT_EQ(tail, (std::vector<int32_t>{0xE2 + 3, 0x98 + 3, 0x83 + 3}));
  EXPECT_EQ(GgufTokenizer().TokenText(0xE2 + 3), "<0xE2>");
  EXPECT_EQ(GgufTokenizer().TokenText(0x41 + 3), "A");
}

TEST(Tokenizer, DecodeDropsTheSpaceAfterBosAndHidesControlTokens) {
  const Tokenizer& t = GgufTokenizer();
  EXPECT_EQ(t.Decode(1, 403), "Once");
  EXPECT_EQ(t.Decode(403, 407), " upon");
  EXPECT_EQ(t.Decode(-1, 1), "");
  EXPECT_EQ(t.TokenText(1), "<s>");
  EXPECT_EQ(Llama2cTokenizer().TokenText(1), "<s>");  // "\n<s>\n" in tok512.bin
  EXPECT_EQ(t.TokenText(403), " Once");
}

// A hand-made vocabulary where the merge order matters: "ab" outscores "bc", so "abc" becomes
// [ab, c], and then "abc" (the best merge of ab+c) wins.
TEST(Tokenizer, MergesHighestScoringPairFirst) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", " ",   "a",  "b",
                                     "c",     "ab",  "bc",   " ab", "abc"};
  std::vector<float> scores = {0, 0, 0, -1, -1, -1, -1, -2, -3, -10, -4};
  std::vector<TokenType> types(pieces.size(), TokenType::kNormal);
  types[0] = TokenType::kUnknown;
  types[1] = types[2] = TokenType::kControl;
  const Tokenizer t("hand-made", pieces, scores, types, 1, 2);
  // " " "a" "b" "c" -> best pair "ab" (-2) -> " " "ab" "c" -> pairs " ab" (-10), "abc" (-4).
  EXPECT_EQ(t.Encode("abc", false, false), (std::vector<int32_t>{3, 10}));
  EXPECT_EQ(t.Decode(t.Encode("abc", true, false)), "abc");
}

TEST(Tokenizer, TruncatedLlama2cFileNamesPathAndToken) {
  testing::TempDir dir;
  const std::string path = dir.File("tok.bin");
  {
    std::ifstream in(kDataDir + "/tok512.bin", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(path, std::ios::binary) << bytes.substr(0, 1000);
  }
  try {
    LoadLlama2cTokenizer(path, 512);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("of token"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace kvsim::models
