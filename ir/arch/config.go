package arch

import (
	"encoding/json"
	"fmt"
	"math"
)

// Config is a parsed Hugging Face config.json. Its accessors return
// errors that name the key, so a malformed config fails with a message
// that says what is wrong.
type Config map[string]any

// ParseConfig parses config.json bytes.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if c == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return c, nil
}

// ModelType is the model_type key.
func (c Config) ModelType() (string, error) {
	if s, ok := c["model_type"].(string); ok && s != "" {
		return s, nil
	}
	return "", fmt.Errorf("missing key model_type")
}

// Int returns the first of keys that is present, as a non-negative integer.
func (c Config) Int(keys ...string) (int, error) {
	for _, k := range keys {
		v, ok := c[k]
		if !ok || v == nil {
			continue
		}
		f, isNum := v.(float64)
		if !isNum || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
			return 0, fmt.Errorf("key %s is %v, want a non-negative integer", k, v)
		}
		return int(f), nil
	}
	return 0, fmt.Errorf("missing key %s", keys[0])
}

// IntOr is Int with a default for absent keys.
func (c Config) IntOr(def int, keys ...string) (int, error) {
	for _, k := range keys {
		if v, ok := c[k]; ok && v != nil {
			return c.Int(k)
		}
	}
	return def, nil
}

// FloatOr returns key as a number, or def when absent.
func (c Config) FloatOr(key string, def float64) (float64, error) {
	v, ok := c[key]
	if !ok || v == nil {
		return def, nil
	}
	f, isNum := v.(float64)
	if !isNum {
		return 0, fmt.Errorf("key %s is %v, want a number", key, v)
	}
	return f, nil
}

// BoolOr returns key as a bool, or def when absent.
func (c Config) BoolOr(key string, def bool) (bool, error) {
	v, ok := c[key]
	if !ok || v == nil {
		return def, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, fmt.Errorf("key %s is %v, want true or false", key, v)
	}
	return b, nil
}

// intKey is one required integer of config.json: where it goes and the
// keys that may spell it.
type intKey struct {
	dst  *int
	keys []string
}

func key(dst *int, keys ...string) intKey { return intKey{dst, keys} }

// ints reads required integers, stopping at the first missing or
// malformed one.
func (c Config) ints(ks ...intKey) error {
	for _, k := range ks {
		v, err := c.Int(k.keys...)
		if err != nil {
			return err
		}
		*k.dst = v
	}
	return nil
}
