package arch

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// SeqDim is the symbolic sequence length of the forward graphs.
const SeqDim = "seq"

// graphInputs adds the token-id and position inputs every decoder graph
// takes.
func graphInputs(g *ir.Graph) (tokens, pos *ir.Value) {
	seq := ir.Shape{ir.Sym(SeqDim)}
	return g.Input("tokens", quant.I32, seq), g.Input("pos", quant.I32, seq)
}

// weightSet adds weights to a graph in canonical order and looks them up
// by name for the builder.
type weightSet struct {
	vals map[string]*ir.Value
}

func addWeights(g *ir.Graph, a Arch, p ir.HParams, weights map[string]*ir.Tensor) *weightSet {
	ws := &weightSet{vals: map[string]*ir.Value{}}
	for _, t := range Ordered(a, p, weights) {
		ws.vals[t.Name] = g.AddWeight(t)
	}
	return ws
}

// get returns the weight value; a missing one is a builder bug caught by
// the nil-input check of ir.Builder.
func (ws *weightSet) get(name string) *ir.Value { return ws.vals[name] }

func (ws *weightSet) has(name string) bool { return ws.vals[name] != nil }

// layerNorm is LayerNorm of x with the gain name.weight and bias name.bias.
func (ws *weightSet) layerNorm(b *ir.Builder, eps ir.Attrs, x *ir.Value, name string) *ir.Value {
	return b.Op("LayerNorm", eps, x, ws.get(name+".weight"), ws.get(name+".bias"))
}

// linear is x times name.weight plus name.bias.
func (ws *weightSet) linear(b *ir.Builder, x *ir.Value, name string) *ir.Value {
	return b.Op("Linear", nil, x, ws.get(name+".weight"), ws.get(name+".bias"))
}

// attention appends scaled dot-product causal attention of the layer over
// q[T,H,d], k[T,Hkv,d], v[T,Hkv,d] and returns the heads concatenated,
// [T, H·d]. The new keys and values join the layer's KV cache, and the
// queries attend to every cached position. It is spelled out (MatMul,
// Scale, CausalMask, Softmax, MatMul) so that passes see the pattern;
// grouped-query heads share K and V through MatMul's grouped batch
// broadcast instead of copies.
func attention(b *ir.Builder, layer int, q, k, v *ir.Value, p ir.HParams) *ir.Value {
	return attentionWith(b, layer, q, k, v, p, p.SlidingWindow > 0)
}

// attentionWith is attention with the window applied or not (models that
// alternate sliding and global layers), and p's query scale and
// soft-capping.
func attentionWith(b *ir.Builder, layer int, q, k, v *ir.Value, p ir.HParams, sliding bool) *ir.Value {
	hd := int64(p.HeadDim())
	scale := 1 / math.Sqrt(float64(hd))
	if p.QueryScale > 0 {
		scale = 1 / math.Sqrt(float64(p.QueryScale))
	}
	toHeads := ir.Attrs{"perm": []int64{1, 0, 2}}
	qh := b.Op("Permute", toHeads, q)
	kh := b.Op("KVCache", ir.Attrs{"layer": int64(layer), "slot": "k"}, k)
	vh := b.Op("KVCache", ir.Attrs{"layer": int64(layer), "slot": "v"}, v)
	s := b.Op("MatMul", ir.Attrs{"transpose_b": true}, qh, kh)
	s = b.Op("Scale", ir.Attrs{"scale": scale}, s)
	if p.AttnSoftcap > 0 {
		s = b.Op("Softcap", ir.Attrs{"cap": float64(p.AttnSoftcap)}, s)
	}
	var window ir.Attrs
	if sliding && p.SlidingWindow > 0 {
		window = ir.Attrs{"window": int64(p.SlidingWindow)}
	}
	s = b.Op("CausalMask", window, s)
	s = b.Op("Softmax", nil, s)
	o := b.Op("MatMul", nil, s, vh)
	o = b.Op("Permute", toHeads, o)
	return b.Op("Reshape", ir.Attrs{"shape": []int64{-1, int64(p.HeadCount) * hd}}, o)
}

// slice is columns [start, end) of x's last axis.
func slice(b *ir.Builder, x *ir.Value, start, end int) *ir.Value {
	return b.Op("Slice", ir.Attrs{"axis": int64(-1), "start": int64(start), "end": int64(end)}, x)
}

func heads(b *ir.Builder, x *ir.Value, n, hd int) *ir.Value {
	return b.Op("Reshape", ir.Attrs{"shape": []int64{-1, int64(n), int64(hd)}}, x)
}

func requireUntiedConsistent(cfg Config, ts map[string]*ir.Tensor, out, lmHead string) error {
	tied, err := cfg.BoolOr("tie_word_embeddings", false)
	if err != nil {
		return err
	}
	if _, ok := ts[out]; !ok && !tied {
		return fmt.Errorf("config.json sets tie_word_embeddings false, but the checkpoint has no %s", lmHead)
	}
	return nil
}
