package train

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/runtime"
)

// CheckpointFile is the file a checkpoint folder holds: every parameter,
// its AdamW moments, and the run's state as metadata, written all or
// nothing.
const CheckpointFile = "checkpoint.safetensors"

// RunInfo identifies a run: a checkpoint is resumed only by the same base,
// adapter shape and objective.
type RunInfo struct {
	Base        string   `json:"base"`
	Fingerprint string   `json:"fingerprint"` // of the base's weights: names, types, shapes
	Objective   string   `json:"objective"`
	Rank        int      `json:"rank"`
	Alpha       float64  `json:"alpha"`
	Targets     []string `json:"targets"`
	Batch       int      `json:"batch"`
	GradAccum   int      `json:"grad_accum"`
	Seed        uint64   `json:"seed"`
	// TeacherSamples is how many windows the teacher wrote into the data
	// (regenerated identically from Seed on resume).
	TeacherSamples int `json:"teacher_samples,omitempty"`
}

// checkpointMeta is RunInfo and the state at the step it was written.
type checkpointMeta struct {
	Version int `json:"version"`
	RunInfo
	Step     int `json:"step"`
	Windows  int `json:"windows"`
	AdamStep int `json:"adam_step"`
}

// Fingerprint identifies a model's weights by their names, types and
// shapes (not their values: hashing gigabytes would cost more than a
// step).
func Fingerprint(m *ir.Model) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", m.Arch)
	for _, w := range m.Graph.Weights {
		fmt.Fprintf(h, "%s %v %v\n", w.Weight.Name, w.Weight.Type, w.Weight.Shape)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// SaveCheckpoint writes the run's state into dir (made if missing).
func SaveCheckpoint(dir string, info RunInfo, e *Engine, st *State, windows int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	meta, err := json.Marshal(checkpointMeta{Version: 1, RunInfo: info, Step: st.Step, Windows: windows, AdamStep: st.Opt.Step})
	if err != nil {
		return err
	}
	var ts []*ir.Tensor
	for i, p := range e.params {
		for _, t := range []struct {
			suffix string
			v      []float32
		}{{"", p.Value}, {".adam_m", st.Opt.M[i]}, {".adam_v", st.Opt.V[i]}} {
			x, err := ir.FromF32(p.Name+t.suffix, p.Shape, append([]float32(nil), t.v...))
			if err != nil {
				return err
			}
			ts = append(ts, x)
		}
	}
	return safetensors.WriteFile(filepath.Join(dir, CheckpointFile), ts, map[string]string{"lqc.checkpoint": string(meta)})
}

// Checkpoint is a checkpoint read back.
type Checkpoint struct {
	Path string
	checkpointMeta
	set *safetensors.Set
}

// LoadCheckpoint reads the checkpoint in dir.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	path := filepath.Join(dir, CheckpointFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s: no checkpoint to resume (%s is missing)", dir, CheckpointFile)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	raw, ok := f.Metadata["lqc.checkpoint"]
	f.Close()
	if !ok {
		return nil, fmt.Errorf("%s: not an lqc checkpoint (no lqc.checkpoint metadata)", path)
	}
	c := &Checkpoint{Path: path}
	if err := json.Unmarshal([]byte(raw), &c.checkpointMeta); err != nil {
		return nil, fmt.Errorf("%s: checkpoint metadata: %v", path, err)
	}
	if c.Version != 1 {
		return nil, fmt.Errorf("%s: checkpoint version %d; this lqc reads version 1", path, c.Version)
	}
	if c.set, err = safetensors.OpenFiles(path); err != nil {
		return nil, err
	}
	return c, nil
}

// Close releases the file.
func (c *Checkpoint) Close() error { return c.set.Close() }

// Check refuses to resume a run of another base, adapter or objective.
func (c *Checkpoint) Check(info RunInfo) error {
	switch {
	case c.Fingerprint != info.Fingerprint:
		return fmt.Errorf("%s was written for base %s, a different model from %s", c.Path, c.Base, info.Base)
	case c.Rank != info.Rank:
		return fmt.Errorf("%s holds a rank-%d adapter; this run asks for rank %d", c.Path, c.Rank, info.Rank)
	case c.Alpha != info.Alpha:
		return fmt.Errorf("%s was trained with alpha %g; this run asks for %g", c.Path, c.Alpha, info.Alpha)
	case c.Objective != info.Objective:
		return fmt.Errorf("%s trained the %s objective; this run asks for %s", c.Path, c.Objective, info.Objective)
	case fmt.Sprint(c.Targets) != fmt.Sprint(info.Targets):
		return fmt.Errorf("%s adapts %v; this run asks for %v", c.Path, c.Targets, info.Targets)
	case c.Batch != info.Batch || c.GradAccum != info.GradAccum:
		return fmt.Errorf("%s used --batch %d --grad-accum %d; resume with the same", c.Path, c.Batch, c.GradAccum)
	case c.TeacherSamples != info.TeacherSamples:
		return fmt.Errorf("%s trained on %d windows the teacher wrote; this run asks for %d: resume with the same --teacher-samples", c.Path, c.TeacherSamples, info.TeacherSamples)
	}
	return nil
}

// Restore puts the checkpoint's parameters, moments and step into e and
// st.
func (c *Checkpoint) Restore(e *Engine, st *State) error {
	read := func(p *runtime.Param, name string, dst []float32) error {
		t, err := c.set.Tensor(name)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
		if t.NumElements() != int64(len(dst)) {
			return fmt.Errorf("%s: %s has %d values, the parameter %d", c.Path, name, t.NumElements(), len(dst))
		}
		v, err := t.Float32s()
		if err != nil {
			return err
		}
		copy(dst, v)
		return nil
	}
	for i, p := range e.params {
		for _, x := range []struct {
			name string
			dst  []float32
		}{{p.Name, p.Value}, {p.Name + ".adam_m", st.Opt.M[i]}, {p.Name + ".adam_v", st.Opt.V[i]}} {
			if err := read(p, x.name, x.dst); err != nil {
				return err
			}
		}
	}
	st.Step, st.Opt.Step = c.Step, c.AdamStep
	e.Changed()
	return nil
}
