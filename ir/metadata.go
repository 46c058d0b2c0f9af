package ir

import "fmt"

// KV is one metadata entry. Value holds one of the Go types that map 1:1
// onto GGUF value types: uint8, int8, uint16, int16, uint32, int32, uint64,
// int64, float32, float64, bool, string, a slice of one of those, or
// []any for nested arrays.
type KV struct {
	Key   string
	Value any
}

// Metadata is an ordered list of key/value pairs; order is kept so that a
// file read and written again keeps its key order.
type Metadata []KV

// Get returns the value of key, if present.
func (m Metadata) Get(key string) (any, bool) {
	for _, kv := range m {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Set replaces key's value, or appends the pair.
func (m *Metadata) Set(key string, v any) {
	for i := range *m {
		if (*m)[i].Key == key {
			(*m)[i].Value = v
			return
		}
	}
	*m = append(*m, KV{key, v})
}

// Delete removes key if present.
func (m *Metadata) Delete(key string) {
	out := (*m)[:0]
	for _, kv := range *m {
		if kv.Key != key {
			out = append(out, kv)
		}
	}
	*m = out
}

// String returns key's value if it is a string.
func (m Metadata) String(key string) (string, bool) {
	v, ok := m.Get(key)
	s, isStr := v.(string)
	return s, ok && isStr
}

// Uint returns key's value if it is a non-negative integer of any width.
func (m Metadata) Uint(key string) (uint64, error) {
	v, ok := m.Get(key)
	if !ok {
		return 0, fmt.Errorf("metadata key %s missing", key)
	}
	switch x := v.(type) {
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int8, int16, int32, int64:
		i := toInt64(x)
		if i < 0 {
			return 0, fmt.Errorf("metadata key %s is negative (%d)", key, i)
		}
		return uint64(i), nil
	}
	return 0, fmt.Errorf("metadata key %s is %T, not an integer", key, v)
}

// Float returns key's value if it is a number.
func (m Metadata) Float(key string) (float64, error) {
	v, ok := m.Get(key)
	if !ok {
		return 0, fmt.Errorf("metadata key %s missing", key)
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case int8, int16, int32, int64:
		return float64(toInt64(x)), nil
	case uint8, uint16, uint32, uint64:
		u, _ := m.Uint(key)
		return float64(u), nil
	}
	return 0, fmt.Errorf("metadata key %s is %T, not a number", key, v)
}

// Bool returns key's value if it is a bool.
func (m Metadata) Bool(key string) (value, present bool) {
	v, ok := m.Get(key)
	b, isBool := v.(bool)
	return b, ok && isBool
}

func toInt64(v any) int64 {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	}
	return 0
}
