package cuda

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// The backward ops (ir/grad.go) and the losses of a training graph; the
// kernels sum in a fixed order, as the CPU's do.

// runTraining dispatches the training ops; ok is false for other ops.
func (b *Backend) runTraining(op string, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) (ok bool, err error) {
	switch op {
	case "SiLUGrad":
		return true, b.elementGrad("silu_grad_f32", out, in[0], in[1])
	case "GELUGrad":
		if attrs.Str("approximate") == "none" {
			return true, b.elementGrad("gelu_erf_grad_f32", out, in[0], in[1])
		}
		return true, b.elementGrad("gelu_grad_f32", out, in[0], in[1])
	case "ReluGrad":
		return true, b.elementGrad("relu_grad_f32", out, in[0], in[1])
	case "SoftcapGrad":
		return true, b.elementGrad("softcap_grad_f32", out, in[0], in[1], float32(attrs.Float("cap")))
	case "SoftmaxGrad":
		return true, b.softmaxGrad(out, in[0], in[1])
	case "RMSNormGrad", "LayerNormGrad":
		if attrs.Str("wrt") == "w" {
			return true, fmt.Errorf("cuda: %s with respect to the norm's weight: no kernel (lqc trains adapters, not norms)", op)
		}
		return true, b.normGrad(op, out, in[0], in[1], in[2], float32(attrs.Float("eps")))
	case "SliceGrad":
		return true, b.sliceGrad(out, in[0], int(attrs.Int("axis")), int(attrs.Int("start")))
	case "LinearT":
		return true, b.linearT(out, in[0], in[1])
	case "LinearGradW":
		return true, b.linearGradW(out, in[0], in[1])
	case "CrossEntropy":
		return true, b.rowLoss("cross_entropy_rows_f32", out, in[0], in[1])
	case "CrossEntropyGrad":
		return true, b.lossGrad("cross_entropy_grad_f32", out, in[0], in[1], in[2])
	case "KLDiv":
		return true, b.rowLoss("kl_div_rows_f32", out, in[0], in[1])
	case "KLDivGrad":
		return true, b.lossGrad("kl_div_grad_f32", out, in[0], in[1], in[2])
	}
	return false, nil
}

// matrix is a 2-D operand of a product as the kernels read it: an
// uploaded weight of any type, or a dense float32 tensor (a trained
// parameter, which the trainer binds as an activation).
type matrix struct {
	typ                    quant.Type
	rows, rowLen, rowBytes int
	ptr                    driver.Ptr
}

func matrixOf(t *lqrt.Tensor, what string) (matrix, error) {
	if w, ok := t.Data.(*devWeight); ok {
		return matrix{w.typ, w.rows, w.rowLen, w.rowBytes, w.buf.ptr}, nil
	}
	if len(t.Shape) != 2 {
		return matrix{}, fmt.Errorf("cuda: %s: want a matrix, have %v%v", what, t.Type, t.Shape)
	}
	p, err := dense(t, what)
	if err != nil {
		return matrix{}, err
	}
	return matrix{quant.F32, t.Shape[0], t.Shape[1], 4 * t.Shape[1], p}, nil
}

// elementGrad is out = dy · f'(x), with the kernel's float parameters
// (a softcap's cap) before the length.
func (b *Backend) elementGrad(kernel string, out, x, dy *lqrt.Tensor, params ...float32) error {
	o, xp, err := dense2(kernel, out, x)
	if err != nil {
		return err
	}
	g, err := dense(dy, kernel)
	if err != nil {
		return err
	}
	args := []any{o, xp, g}
	for _, p := range params {
		args = append(args, p)
	}
	return b.launchN(kernel, out.Len(), append(args, int32(out.Len()))...)
}

// rowsOf is a tensor's rows of its last axis: their count and length.
func rowsOf(t *lqrt.Tensor) (rows, n int) {
	n = t.Shape[len(t.Shape)-1]
	if n == 0 {
		return 0, 0
	}
	return t.Len() / n, n
}

func (b *Backend) softmaxGrad(out, y, dy *lqrt.Tensor) error {
	o, yp, err := dense2("SoftmaxGrad", out, y)
	if err != nil {
		return err
	}
	g, err := dense(dy, "SoftmaxGrad")
	if err != nil {
		return err
	}
	rows, n := rowsOf(y)
	if rows == 0 {
		return nil
	}
	return b.launch("softmax_grad_f32", driver.Dim3{X: uint32(rows)}, driver.Dim3{X: uint32(blockFor(n))}, o, yp, g, int32(n))
}

// normGrad is RMSNorm's or LayerNorm's gradient with respect to x.
func (b *Backend) normGrad(op string, out, x, w, dy *lqrt.Tensor, eps float32) error {
	o, xp, err := dense2(op, out, x)
	if err != nil {
		return err
	}
	wp, err := ptr(w)
	if err != nil {
		return err
	}
	g, err := dense(dy, op)
	if err != nil {
		return err
	}
	rows, d := rowsOf(x)
	if rows == 0 {
		return nil
	}
	kernel := "rms_norm_grad_f32"
	if op == "LayerNormGrad" {
		kernel = "layer_norm_grad_f32"
	}
	return b.launch(kernel, driver.Dim3{X: uint32(rows)}, driver.Dim3{X: 256}, o, xp, wp, g, int32(d), eps)
}

// sliceGrad places dy at [start, start+len) along axis of a zero out:
// Slice's copy, the other way.
func (b *Backend) sliceGrad(out, dy *lqrt.Tensor, axis, start int) error {
	if axis < 0 {
		axis += len(out.Shape)
	}
	o, g, err := dense2("SliceGrad", out, dy)
	if err != nil {
		return err
	}
	if err := b.launchN("fill_f32", out.Len(), o, float32(0), int32(out.Len())); err != nil {
		return err
	}
	outer, inner := aroundAxis(out.Shape, axis)
	n := dy.Shape[axis] * inner
	return b.copyRows(o, g, outer, n, out.Shape[axis]*inner, start*inner, n, 0)
}

// linearT is dx = dy·W on a weight of any type (or a float32 parameter).
func (b *Backend) linearT(dx, dy, w *lqrt.Tensor) error {
	m, err := matrixOf(w, "LinearT")
	if err != nil {
		return err
	}
	o, g, err := dense2("LinearT", dx, dy)
	if err != nil {
		return err
	}
	T := dy.Len() / m.rows
	if T == 0 {
		return nil
	}
	if m.rowLen%32 != 0 {
		if m.typ != quant.F32 {
			return fmt.Errorf("cuda: LinearT on %v rows of %d values: no kernel", m.typ, m.rowLen)
		}
		return b.launchN("linear_t_f32_any", T*m.rowLen, o, g, m.ptr, int32(m.rowLen), int32(m.rows), int32(T))
	}
	kernel, ok := linearTKernels[m.typ]
	if !ok {
		return fmt.Errorf("cuda: LinearT on %v weights: no kernel", m.typ)
	}
	groups := m.rowLen / 32
	const threads = 64
	grid := driver.Dim3{X: uint32((groups + threads - 1) / threads), Y: uint32((T + linearTokens - 1) / linearTokens)}
	return b.launch(kernel, grid, driver.Dim3{X: threads}, o, g, m.ptr, int32(m.rowLen), int32(m.rows), int32(m.rowBytes), int32(T))
}

// linearGradW is dW = Σ_t dy[t]ᵀ·x[t].
func (b *Backend) linearGradW(dw, dy, x *lqrt.Tensor) error {
	o, g, err := dense2("LinearGradW", dw, dy)
	if err != nil {
		return err
	}
	xp, err := dense(x, "LinearGradW")
	if err != nil {
		return err
	}
	nout, in := dw.Shape[0], dw.Shape[1]
	return b.launchN("linear_grad_w_f32", nout*in, o, g, xp, int32(dy.Len()/max(nout, 1)), int32(nout), int32(in))
}

// rowLoss sums a loss over rows: one kernel writes each row's term, one
// thread adds them in order.
func (b *Backend) rowLoss(kernel string, out, logits, second *lqrt.Tensor) error {
	lp, err := dense(logits, kernel)
	if err != nil {
		return err
	}
	o, err := dense(out, kernel)
	if err != nil {
		return err
	}
	sp, err := ptr(second) // targets (I32) or the teacher's logits
	if err != nil {
		return err
	}
	V := logits.Shape[len(logits.Shape)-1]
	T := logits.Len() / V
	if err := b.checkTargets(second, V); err != nil {
		return err
	}
	per, err := b.alloc(int64(4 * max(T, 1)))
	if err != nil {
		return err
	}
	if T > 0 {
		if err := b.launch(kernel, driver.Dim3{X: uint32(T)}, driver.Dim3{X: uint32(blockFor(V))}, per.ptr, lp, sp, int32(V)); err != nil {
			return err
		}
	}
	err = b.launch("sum_in_order_f32", driver.Dim3{X: 1}, driver.Dim3{X: 1}, o, per.ptr, int32(T))
	keepUntilLaunched(per)
	return err
}

// lossGrad is a loss's gradient with respect to the logits, scaled by
// dl (a one-value tensor on the device).
func (b *Backend) lossGrad(kernel string, out, logits, second, dl *lqrt.Tensor) error {
	o, lp, err := dense2(kernel, out, logits)
	if err != nil {
		return err
	}
	sp, err := ptr(second)
	if err != nil {
		return err
	}
	dp, err := dense(dl, kernel)
	if err != nil {
		return err
	}
	V := logits.Shape[len(logits.Shape)-1]
	if err := b.checkTargets(second, V); err != nil {
		return err
	}
	if logits.Len() == 0 {
		return nil
	}
	return b.launch(kernel, driver.Dim3{X: uint32(logits.Len() / V)}, driver.Dim3{X: uint32(blockFor(V))}, o, lp, sp, dp, int32(V))
}

// checkTargets refuses target ids outside the vocabulary (from their
// host copy), as the CPU backend does; other operands pass.
func (b *Backend) checkTargets(t *lqrt.Tensor, V int) error {
	d, ok := t.Data.(*devTensor)
	if !ok || t.Type != quant.I32 {
		return nil
	}
	for pos, y := range d.host {
		if y >= int32(V) {
			return fmt.Errorf("target %d at position %d is outside the vocabulary of %d", y, pos, V)
		}
	}
	return nil
}
