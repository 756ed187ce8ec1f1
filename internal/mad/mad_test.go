package mad

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestMedianMAD(t *testing.T) {
	tests := []struct {
		name        string
		xs          []float64
		median, mad float64
	}{
		{"empty", nil, 0, 0},
		{"only NaN and Inf", []float64{math.NaN(), math.Inf(1), math.Inf(-1)}, 0, 0},
		{"one", []float64{7}, 7, 0},
		{"odd", []float64{1, 1, 2, 2, 4, 6, 9}, 2, 1},
		{"even", []float64{1, 2, 3, 4}, 2.5, 1},
		{"unsorted with NaN", []float64{9, math.NaN(), 1, 6, 2, 4, 2, 1}, 2, 1},
		{"majority equal", []float64{5, 5, 5, 5, 100}, 5, 0},
		{"all equal", []float64{3, 3, 3}, 3, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.xs...)
			m, d := MedianMAD(in)
			if m != tc.median || d != tc.mad {
				t.Errorf("MedianMAD(%v) = %v, %v; want %v, %v", tc.xs, m, d, tc.median, tc.mad)
			}
			for i := range in {
				if !(in[i] == tc.xs[i] || math.IsNaN(in[i]) && math.IsNaN(tc.xs[i])) {
					t.Fatalf("input modified at %d: %v", i, in)
				}
			}
		})
	}
}

func TestSpreadFallback(t *testing.T) {
	xs := []float64{5, 5, 5, 5, 100}
	m, d := MedianMAD(xs)
	if d != 0 {
		t.Fatalf("MAD = %v, want 0", d)
	}
	s := Spread(xs, m, d)
	if want := 95.0 / 5; s != want {
		t.Fatalf("Spread = %v, want mean absolute deviation %v", s, want)
	}
	if c := Classify(100, m, s); c != High {
		t.Errorf("outlier with MAD 0 classified %v, want high", c)
	}
	if c := Classify(5, m, s); c != Normal {
		t.Errorf("majority value classified %v, want normal", c)
	}
	if s := Spread([]float64{3, 3, 3}, 3, 0); s != 0 {
		t.Errorf("Spread of identical values = %v, want 0", s)
	}
	if s := Spread(nil, 0, 0); s != 0 {
		t.Errorf("Spread of empty input = %v, want 0", s)
	}
	if s := Spread(xs, m, 2); s != 2 {
		t.Errorf("Spread with positive MAD = %v, want the MAD 2", s)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		x, median, spread float64
		want              Colour
	}{
		{10, 10, 1, Normal},
		{8.5, 10, 1, Normal}, // exactly 1.5 MAD below: not coloured
		{8.49, 10, 1, Low},
		{11.5, 10, 1, Normal},
		{11.51, 10, 1, High},
		{0, 10, 0, Normal}, // spread 0: nothing coloured
		{1e9, 10, 0, Normal},
		{1e9, 10, -1, Normal},
		{math.NaN(), 10, 1, Normal},
		{5, math.NaN(), 1, Normal},
		{5, 10, math.NaN(), Normal},
	}
	for _, tc := range tests {
		if got := Classify(tc.x, tc.median, tc.spread); got != tc.want {
			t.Errorf("Classify(%v, %v, %v) = %v, want %v", tc.x, tc.median, tc.spread, got, tc.want)
		}
	}
}

func TestColourString(t *testing.T) {
	for c, want := range map[Colour]string{Normal: "normal", Low: "low", High: "high", Colour(42): "normal"} {
		if got := c.String(); got != want {
			t.Errorf("Colour(%d).String() = %q, want %q", c, got, want)
		}
	}
}

func BenchmarkMedianMAD100k(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, 100_000)
	for i := range xs {
		xs[i] = r.ExpFloat64() * 100
	}
	for b.Loop() {
		MedianMAD(xs)
	}
}
