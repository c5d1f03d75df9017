package jsonlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	// nextSuffix names the file a rotation creates before it becomes the current file.
	nextSuffix = ".next"
	// droppedSuffix names the oldest rotated file while the rotation can still be undone.
	droppedSuffix = ".dropped"
)

func rotatedName(path string, n int) string {
	return path + "." + strconv.Itoa(n)
}

// A move is one step of a rotation.
type move struct {
	from, to string
	// link gives from the second name to instead of renaming it.
	link bool
}

func (m move) do() error {
	if m.link {
		return linkFile(m.from, m.to)
	}
	return renameFile(m.from, m.to)
}

func (m move) undo() error {
	if m.link {
		return os.Remove(m.to)
	}
	return renameFile(m.to, m.from)
}

// rotateLocked moves path to path.1 (path.N to path.N+1, dropping path.MaxFiles) and
// continues in a new file. It completes, or puts every file back where it was and leaves
// the writer on its current file: a failed rotation loses no history. rotated reports
// that the writer moved to the new file, which it does even when only the directory's
// fsync failed.
func (w *Writer) rotateLocked() (rotated bool, err error) {
	path := w.opts.Path
	if err := w.f.Sync(); err != nil {
		return false, fmt.Errorf("fsync log %s before rotating it: %w", path, err)
	}
	// The new file is created first, under a name of its own, and locked before it takes
	// path: what fails most (no space, inode or file descriptor left, no permission)
	// fails before any file moved, and path never names a file no writer holds a lock on.
	// A leftover of an interrupted rotation is empty, as nothing is written to it before
	// it is renamed: truncating it loses nothing.
	next := path + nextSuffix
	f, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return false, fmt.Errorf("rotate log %s: create its next file: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		_ = f.Close() // nothing written
		return false, fmt.Errorf("rotate log %s: lock its next file %s: %w", path, next, err)
	}

	// The oldest file is renamed rather than removed, so that a failure further on can
	// bring it back.
	dropped := path + droppedSuffix
	moves := []move{{from: rotatedName(path, w.opts.MaxFiles), to: dropped}}
	for i := w.opts.MaxFiles - 1; i >= 1; i-- {
		moves = append(moves, move{from: rotatedName(path, i), to: rotatedName(path, i+1)})
	}
	// A link, not a rename: path goes on naming a locked file until next replaces it in
	// one step, so another process's Open cannot create a fresh file there in between.
	// A crash right after the link leaves path and path.1 naming one file; Open undoes it.
	moves = append(moves,
		move{from: path, to: rotatedName(path, 1), link: true},
		move{from: next, to: path})

	var done []move
	for _, m := range moves {
		err := m.do()
		if m.link && (errors.Is(err, fs.ErrPermission) || errors.Is(err, errors.ErrUnsupported)) {
			// A file system without hard links (Linux says EPERM): a rename leaves path
			// missing for a moment, which is the most that is lost.
			m.link = false
			err = m.do()
		}
		if errors.Is(err, fs.ErrNotExist) && m.from != next {
			// No rotated file by that number yet, or path was removed by someone.
			continue
		}
		if err != nil {
			err = fmt.Errorf("rotate log %s: move %s to %s: %w", path, m.from, m.to, err)
			w.undoLocked(done, err)
			// next never moved: it is the last step.
			_ = f.Close() // nothing written
			_ = os.Remove(next)
			return false, err
		}
		done = append(done, m)
	}

	// Nothing is undone from here on. A dropped file that cannot be removed is replaced
	// at the next rotation.
	_ = os.Remove(dropped)
	// The old file was synced above: closing it (which releases its lock) loses nothing.
	_ = w.f.Close()
	w.f, w.size = f, 0
	if w.opts.Fsync != FsyncNever {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return true, fmt.Errorf("rotate log %s: %w", path, err)
		}
	}
	return true, nil
}

// undoLocked undoes the moves done by a rotation that failed with cause, last first.
// When one cannot be undone the writer is broken, as readers would not find its file
// where they look; each Append tries the rest again.
func (w *Writer) undoLocked(done []move, cause error) {
	rest, err := undoMoves(done)
	if err == nil {
		return
	}
	var manual []string
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i].link {
			manual = append(manual, "remove "+rest[i].to)
		} else {
			manual = append(manual, fmt.Sprintf("move %s to %s", rest[i].to, rest[i].from))
		}
	}
	w.breakLocked(fmt.Errorf("%w, and putting the files back failed (%w): appends are refused and retry that until it succeeds; to do it by hand, stop the operator, %s, in that order, and restart",
		cause, err, strings.Join(manual, ", ")),
		func() error {
			rest, err = undoMoves(rest)
			return err
		})
}

// undoMoves undoes done, last first, and returns what is left when one fails.
func undoMoves(done []move) (rest []move, err error) {
	for i := len(done) - 1; i >= 0; i-- {
		if err := done[i].undo(); err != nil {
			return done[:i+1], fmt.Errorf("undo the move of %s to %s: %w", done[i].from, done[i].to, err)
		}
	}
	return nil, nil
}

// restoreDropped settles path.dropped, left by a crash in the middle of a rotation (see
// rotateLocked): the next rotation would replace it, losing it along with the file that
// rotation drops. It runs after undoHalfRotation, and the rule is:
//
//   - When a number among path.1 … path.MaxFiles is free, the rotation stopped before
//     the next file took path (undoHalfRotation removed a second name path.1 left by the
//     link): the moves it did are undone. The files above the highest free number move
//     down by one, which takes them back where they were, and path.dropped becomes
//     path.MaxFiles again, the number it came from. When the crash came before any other
//     file moved, that number is the free one and path.dropped is all that moves.
//   - When every number is taken, the rotation completed but for removing path.dropped,
//     which is removed now, as it would have been.
//
// Each step moves one file to a free name, so a crash or a failure in the middle leaves
// the files in a state the same rule settles on the next Open.
func (w *Writer) restoreDropped() error {
	path := w.opts.Path
	dropped := path + droppedSuffix
	if _, err := os.Lstat(dropped); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("stat %s, left by an interrupted rotation of log %s: %w", dropped, path, err)
	}
	free := 0
	for i := w.opts.MaxFiles; i >= 1; i-- {
		_, err := os.Lstat(rotatedName(path, i))
		if errors.Is(err, fs.ErrNotExist) {
			free = i
			break
		}
		if err != nil {
			return fmt.Errorf("stat rotated log %s: %w", rotatedName(path, i), err)
		}
	}
	if free == 0 {
		if err := os.Remove(dropped); err != nil {
			return fmt.Errorf("remove %s, dropped by a rotation of log %s that completed: %w", dropped, path, err)
		}
		return nil
	}
	moves := make([]move, 0, w.opts.MaxFiles-free+1)
	for i := free; i < w.opts.MaxFiles; i++ {
		moves = append(moves, move{from: rotatedName(path, i+1), to: rotatedName(path, i)})
	}
	moves = append(moves, move{from: dropped, to: rotatedName(path, w.opts.MaxFiles)})
	for _, m := range moves {
		if err := m.do(); err != nil {
			return fmt.Errorf("undo an interrupted rotation of log %s: move %s back to %s: %w", path, m.from, m.to, err)
		}
	}
	return nil
}
