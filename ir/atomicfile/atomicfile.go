// Package atomicfile writes output files all or nothing: the bytes go to
// a temporary file beside the destination, which is renamed over it only
// once complete, so a failed or interrupted write never leaves a partial
// file under the real name.
package atomicfile

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// Write creates path with the bytes fill writes (through a 1 MiB buffer),
// mode 0644. On any error the temporary file is removed and path is left
// as it was; fill's own errors come back as they are.
func Write(path string, fill func(w *bufio.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err = fill(w); err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// ReplaceDir puts the complete folder tmp (made beside dir) in dir's
// place: a folder that is there already is moved aside first and removed
// only once the new one is in place, so dir holds the old folder or the
// new one, never a mix.
func ReplaceDir(tmp, dir string) error {
	st, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("cannot write %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("cannot write %s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("cannot write %s: it is a file, not a folder", dir)
	}
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil {
		return fmt.Errorf("cannot replace %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Rename(old, dir)
		return fmt.Errorf("cannot write %s: %w", dir, err)
	}
	return os.RemoveAll(old)
}
