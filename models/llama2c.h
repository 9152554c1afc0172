#pragma once
// llama2.c checkpoints (karpathy/llama2.c run.c, the legacy "version 0" export): a header of 7
// int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len}, then float32
// tensors token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, the unused
// RoPE tables freq_cis_real/imag [seq_len, head_size/2], and the classifier wcls when
// vocab_size < 0 (a negative vocab_size means "not shared with the embedding").
#include <string>

#include "models/llama_model.h"

namespace kvsim::models {

// Loads a legacy llama2.c checkpoint. Throws InputError naming the path and the field or tensor
// when the header is implausible, the file is the newer "ak42" export (versions 1/2), or the
// file is shorter or longer than the header implies. rope_theta 10000 and rms_eps 1e-5 are
// llama2.c run.c's constants; the context length is the header's seq_len.
LlamaWeights LoadLlama2cCheckpoint(const std::string& path);

}  // namespace kvsim::models
