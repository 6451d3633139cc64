package forward

import (
	"testing"
	"time"
)

// TestIdleDeadline: a deadline is armed when none is, not again while it
// is still near idle away, again when someone else set one, and at once
// when idle shrank (a reload).
func TestIdleDeadline(t *testing.T) {
	var d idleDeadline
	first, ok := d.next(time.Hour)
	if !ok || time.Until(first) < 59*time.Minute {
		t.Fatalf("first: %v %v", first, ok)
	}
	if _, ok := d.next(time.Hour); ok {
		t.Fatal("re-armed a deadline still about an hour away")
	}
	d.forget()
	if _, ok := d.next(time.Hour); !ok {
		t.Fatal("not re-armed after forget")
	}
	if t2, ok := d.next(time.Minute); !ok || time.Until(t2) > time.Minute {
		t.Fatalf("a shorter idle: %v %v", t2, ok)
	}
	if testing.AllocsPerRun(100, func() { d.next(time.Minute) }) != 0 {
		t.Fatal("next allocates")
	}
}
