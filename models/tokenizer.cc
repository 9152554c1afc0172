#include "models/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::models {
namespace {

// The byte of a "<0xXX>" piece, or -1.
int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string Trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\n\r");
  if (begin == std::string_view::npos) return "";
  const auto end = s.find_last_not_of(" \t\n\r");
  return std::string(s.substr(begin, end - begin + 1));
}

}  // namespace

Tokenizer::Tokenizer(std::string source,
                     std::vector<std::string> pieces,
                     std::vector<float> scores,
                     std::vector<TokenType> types,
                     int32_t bos_id,
                     int32_t eos_id)
    : source_(std::move(source)),
      pieces_(std::move(pieces)),
      scores_(std::move(scores)),
      types_(std::move(types)),
      bos_id_(bos_id),
      eos_id_(eos_id) {
  if (scores_.size() != pieces_.size() || types_.size() != pieces_.size()) {
    ThrowInputError("{}: tokenizer has {} pieces, {} scores and {} token types, expected equal",
                    source_, pieces_.size(), scores_.size(), types_.size());
  }
  if (pieces_.empty()) ThrowInputError("{}: tokenizer vocabulary is empty", source_);
  const auto n = static_cast<int32_t>(pieces_.size());
  if (bos_id_ < 0 || bos_id_ >= n || eos_id_ < 0 || eos_id_ >= n) {
    ThrowInputError("{}: BOS id {} / EOS id {} out of range for a vocabulary of {}", source_,
                    bos_id_, eos_id_, n);
  }
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (int32_t id = 0; id < n; ++id) {
    const TokenType type = types_[static_cast<size_t>(id)];
    const std::string& p = pieces_[static_cast<size_t>(id)];
    if (type == TokenType::kByte) {
      const int byte = ParseBytePiece(p);
      if (byte < 0) {
        ThrowInputError("{}: byte token {} has piece '{}', expected <0xXX>", source_, id, p);
      }
      if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
    } else if (type == TokenType::kNormal || type == TokenType::kUserDefined) {
      lookup_.emplace(p, id);  // keeps the lowest id of a duplicated piece
    }
  }
}

int32_t Tokenizer::Lookup(std::string_view piece) const {
  const auto it = lookup_.find(std::string(piece));
  return it == lookup_.end() ? -1 : it->second;
}

int Tokenizer::ByteOf(int32_t id) const {
  if (types_[static_cast<size_t>(id)] != TokenType::kByte) return -1;
  return ParseBytePiece(pieces_[static_cast<size_t>(id)]);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> tokens;
  if (add_bos) tokens.push_back(bos_id_);
  const size_t first = tokens.size();

  auto push_piece = [&](std::string_view piece) {
    const int32_t id = Lookup(piece);
    if (id >= 0) {
      tokens.push_back(id);
      return;
    }
    // Byte fallback, as SentencePiece's byte_fallback and llama2.c's `byte + 3`.
    for (const char c : piece) {
      const int32_t byte_id = byte_ids_[static_cast<unsigned char>(c)];
      if (byte_id < 0) {
        ThrowInputError("{}: cannot encode byte 0x{:02X}: the vocabulary has no byte token for it",
                        source_, static_cast<unsigned char>(c));
      }
      tokens.push_back(byte_id);
    }
  };

  // SentencePiece's add_dummy_prefix: the text is encoded as if it started with a space.
  if (!text.empty()) push_piece(" ");
  // One lookup per UTF-8 code point (a lead byte plus at most 3 continuation bytes).
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (i + len < text.size() && len < 4 &&
           (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) {
      ++len;
    }
    push_piece(text.substr(i, len));
    i += len;
  }

  // Greedy BPE: repeatedly merge the adjacent pair whose merged piece scores highest (the first
  // such pair on ties). pair_id[i] caches the merge of tokens[i], tokens[i+1] (-1 = none).
  auto merged_id = [&](size_t i) {
    return Lookup(pieces_[static_cast<size_t>(tokens[i])] +
                  pieces_[static_cast<size_t>(tokens[i + 1])]);
  };
  std::vector<int32_t> pair_id;
  for (size_t i = first; i + 1 < tokens.size(); ++i) pair_id.push_back(merged_id(i));
  while (true) {
    float best_score = std::numeric_limits<float>::lowest();
    size_t best = pair_id.size();
    for (size_t j = 0; j < pair_id.size(); ++j) {
      const int32_t id = pair_id[j];
      if (id >= 0 && scores_[static_cast<size_t>(id)] > best_score) {
        best_score = scores_[static_cast<size_t>(id)];
        best = j;
      }
    }
    if (best == pair_id.size()) break;
    const size_t i = first + best;
    tokens[i] = pair_id[best];
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(i + 1));
    pair_id.erase(pair_id.begin() + static_cast<std::ptrdiff_t>(best));
    if (best < pair_id.size()) pair_id[best] = merged_id(i);
    if (best > 0) pair_id[best - 1] = merged_id(i - 1);
  }

  if (add_eos) tokens.push_back(eos_id_);
  return tokens;
}

std::string Tokenizer::Decode(int32_t prev, int32_t token) const {
  if (token < 0 || token >= vocab_size()) {
    ThrowInputError("{}: token id {} out of range [0, {})", source_, token, vocab_size());
  }
  const TokenType type = types_[static_cast<size_t>(token)];
  if (type == TokenType::kControl || type == TokenType::kUnused) return "";
  if (type == TokenType::kByte) return std::string(1, static_cast<char>(ByteOf(token)));
  std::string_view piece = pieces_[static_cast<size_t>(token)];
  if (prev == bos_id_ && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  return std::string(piece);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string text;
  int32_t prev = -1;
  for (const int32_t id : ids) {
    text += Decode(prev, id);
    prev = id;
  }
  return text;
}

std::string Tokenizer::TokenText(int32_t token) const {
  if (token < 0 || token >= vocab_size()) {
    ThrowInputError("{}: token id {} out of range [0, {})", source_, token, vocab_size());
  }
  const std::string& piece = pieces_[static_cast<size_t>(token)];
  switch (types_[static_cast<size_t>(token)]) {
    case TokenType::kControl:
      return Trim(piece);
    case TokenType::kByte: {
      const int byte = ByteOf(token);
      return byte < 0x80 ? std::string(1, static_cast<char>(byte)) : piece;
    }
    default:
      return piece;
  }
}

Tokenizer LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size) {
  RegisterInputFile(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open llama2.c tokenizer file", path);
  auto read = [&](void* dst, size_t bytes, std::string_view what, int32_t index) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    if (!in) {
      ThrowInputError(
          "{}: truncated llama2.c tokenizer: cannot read {} of token {} (vocabulary "
          "size {} from the checkpoint)",
          path, what, index, vocab_size);
    }
  };
  uint32_t max_token_length = 0;
  read(&max_token_length, sizeof(max_token_length), "max_token_length", -1);
  std::vector<std::string> pieces(static_cast<size_t>(vocab_size));
  std::vector<float> scores(static_cast<size_t>(vocab_size));
  std::vector<TokenType> types(static_cast<size_t>(vocab_size), TokenType::kNormal);
  for (int32_t i = 0; i < vocab_size; ++i) {
    read(&scores[static_cast<size_t>(i)], sizeof(float), "score", i);
    uint32_t len = 0;
    read(&len, sizeof(len), "length", i);
    if (len > max_token_length || len > 4096) {
      ThrowInputError("{}: token {} has length {}, expected at most max_token_length {}", path, i,
                      len, max_token_length);
    }
    std::string& piece = pieces[static_cast<size_t>(i)];
    piece.resize(len);
    read(piece.data(), len, "piece bytes", i);
    if (ParseBytePiece(piece) >= 0) types[static_cast<size_t>(i)] = TokenType::kByte;
  }
  // llama2.c's tokenizer.py writes the SentencePiece ids 0-2 as unk, "\n<s>\n" and "\n</s>\n".
  constexpr int32_t kBos = 1;
  constexpr int32_t kEos = 2;
  if (vocab_size > 2) {
    types[0] = TokenType::kUnknown;
    types[kBos] = TokenType::kControl;
    types[kEos] = TokenType::kControl;
  }
  return Tokenizer(path, std::move(pieces), std::move(scores), std::move(types), kBos, kEos);
}

}  // namespace kvsim::models
