package middleware

import (
	"testing"
	"time"
)

// These tests drive the budget in virtual time through withdraw(now).

func TestBudgetFloorVirtualTime(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	b := NewRetryBudget(0, 2) // 2 a second, banked for ten seconds: 20
	take := func(now time.Time, n int) int {
		got := 0
		for range n {
			if b.withdraw(now) {
				got++
			}
		}
		return got
	}
	for _, step := range []struct {
		at   time.Duration
		want int
	}{
		{0, 20},                     // the bank is full at first
		{0, 0},                      // and empty now
		{499 * time.Millisecond, 0}, // not yet one
		{500 * time.Millisecond, 1}, // one every half second
		{time.Second, 1},            //
		{3 * time.Second, 4},        // two seconds' worth
		{time.Hour, 20},             // never more than ten seconds' worth
	} {
		if got, want := b.allows(t0.Add(step.at)), step.want > 0; got != want {
			t.Fatalf("at t0+%v: allows = %v, want %v", step.at, got, want)
		}
		if got := take(t0.Add(step.at), 100); got != step.want {
			t.Fatalf("at t0+%v: %d retries, want %d", step.at, got, step.want)
		}
	}
}

func TestBudgetBalanceThousandths(t *testing.T) {
	for _, tc := range []struct {
		ratio float64
		want  int64 // deposited per call
	}{
		{0.2, 200},
		{0.001, 1},
		{0.0009, 0}, // below a thousandth: nothing
		{1, 1000},
		{0, 0},
		{-3, 0},
	} {
		b := NewRetryBudget(tc.ratio, 0)
		b.deposit()
		if got := b.balance.Load(); got != tc.want {
			t.Errorf("NewRetryBudget(%v, 0) deposits %d thousandths, want %d", tc.ratio, got, tc.want)
		}
	}
}

func TestBudgetWithdraw(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	b := NewRetryBudget(0.2, 0)
	for range 9 {
		b.deposit()
	}
	if got := b.balance.Load(); got != 1800 {
		t.Fatalf("balance = %d after 9 deposits of 0.2, want 1800", got)
	}
	if !b.allows(now) {
		t.Fatal("allows with 1.8 retries banked = false, want true")
	}
	if got := b.balance.Load(); got != 1800 {
		t.Fatalf("balance = %d after allows, want 1800 (unchanged)", got)
	}
	if !b.withdraw(now) {
		t.Fatal("withdraw with 1.8 retries banked = false, want true")
	}
	if got := b.balance.Load(); got != 800 {
		t.Fatalf("balance = %d after a withdrawal, want 800", got)
	}
	if b.allows(now) {
		t.Fatal("allows with 0.8 retries banked and no floor = true, want false")
	}
	if b.withdraw(now) {
		t.Fatal("withdraw with 0.8 retries banked and no floor = true, want false")
	}
	if got := b.balance.Load(); got != 800 {
		t.Fatalf("balance = %d after a refused withdrawal, want 800 (unchanged)", got)
	}
}

func TestBudgetCap(t *testing.T) {
	b := NewRetryBudget(7, 0)
	for range 100 {
		b.deposit()
	}
	if got := b.balance.Load(); got != budgetCap {
		t.Fatalf("balance = %d, want the cap %d", got, budgetCap)
	}
}
