#pragma once
// A SentencePiece-style BPE tokenizer with llama2.c `encode`/`decode` semantics (run.c): an
// optional BOS, a dummy-prefix space, UTF-8 code points looked up whole or split into byte
// tokens, then greedy merging of the adjacent pair whose merged piece has the highest score.
// The same class serves llama2.c tokenizer files and the vocabulary embedded in a GGUF file
// (tokenizer.ggml.model = "llama"), so both give identical ids.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvsim::models {

// GGUF's token types (llama.cpp llama_token_type); llama2.c files carry none, so their loader
// infers them from the pieces.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // `pieces` use a plain space where SentencePiece writes U+2581; byte tokens are the 6-character
  // pieces "<0xXX>". All three vectors have one entry per id. Throws InputError (naming `source`)
  // if the sizes differ or bos/eos are out of range.
  Tokenizer(std::string source,
            std::vector<std::string> pieces,
            std::vector<float> scores,
            std::vector<TokenType> types,
            int32_t bos_id,
            int32_t eos_id);

  // llama2.c encode(): [BOS] + pieces of " " + text (the dummy prefix only when text is not
  // empty) + [EOS]. Control, byte and unknown tokens are never produced by lookup, only bytes
  // by the byte fallback (id of "<0xXX>").
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool add_eos) const;

  // llama2.c decode(): the text of `token` following `prev` (-1 for none). Drops the leading
  // space of a piece right after BOS, turns byte tokens into their byte and control tokens into
  // nothing.
  std::string Decode(int32_t prev, int32_t token) const;
  // Concatenated Decode() of a sequence, starting with prev = -1.
  std::string Decode(std::span<const int32_t> ids) const;

  // A readable, valid UTF-8 label of one token for traces: the piece (with its space), control
  // tokens as their trimmed piece ("<s>"), byte tokens as their ASCII character or "<0xXX>".
  std::string TokenText(int32_t token) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  const std::string& piece(int32_t id) const { return pieces_.at(static_cast<size_t>(id)); }
  TokenType type(int32_t id) const { return types_.at(static_cast<size_t>(id)); }
  float score(int32_t id) const { return scores_.at(static_cast<size_t>(id)); }

 private:
  int32_t Lookup(std::string_view piece) const;
  // The byte value of a byte token, or -1.
  int ByteOf(int32_t id) const;

  std::string source_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  int32_t bos_id_;
  int32_t eos_id_;
  std::unordered_map<std::string, int32_t> lookup_;  // normal/user-defined pieces -> lowest id
  int32_t byte_ids_[256];                            // id of "<0xXX>", or -1
};

// Reads a llama2.c tokenizer file (tokenizer.bin / tok512.bin: uint32 max_token_length, then per
// token float32 score, uint32 length, bytes). `vocab_size` comes from the checkpoint header.
// llama2.c fixes BOS = 1 and EOS = 2; id 0 "<unk>" is the unknown token. Throws InputError
// naming the path and the token index on a truncated or malformed file.
Tokenizer LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size);

}  // namespace kvsim::models
