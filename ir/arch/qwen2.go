package arch

// Qwen2 and Qwen2.5 are Llama with biases on the q, k and v projections
// and RoPE over the two halves of each head (Hugging Face's layout, kept
// as it is: llama.cpp runs qwen2 with NeoX-style RoPE). The converter
// writes neither qwen2.vocab_size nor qwen2.rope.dimension_count.
func init() {
	register(llamaFamily{name: "qwen2", hfTypes: []string{"qwen2"}, qkvBias: true, neox: true})
}
