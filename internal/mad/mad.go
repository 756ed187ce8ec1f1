// Package mad computes the median and the median absolute deviation (MAD)
// of a sample and classifies values as low, normal or high against them.
//
// The web pages use it to colour the Instances table: an instance whose
// average SIP traffic lies more than 1.5 MAD below the median is shown
// blue, one more than 1.5 MAD above it red.
//
// The MAD is zero whenever more than half of the values are equal, which
// is common (for example most instances idling at the same refresh rate).
// A zero spread would make every other value an outlier, and a plain
// "nothing is coloured" rule would hide a genuine outlier; so Spread falls
// back to the mean absolute deviation around the median when the MAD is
// zero. Only when every value equals the median (mean absolute deviation
// also zero) is nothing coloured. Classify itself never colours anything
// when given a spread of zero or less.
//
// It is pure arithmetic: it imports nothing of sipis and must not keep state or know what
// the values measure.
package mad

import (
	"math"
	"slices"
)

// Threshold is how many spreads (MADs) away from the median a value must
// lie to be classified Low or High.
const Threshold = 1.5

// Colour is the classification of a value against the median and spread.
type Colour int

const (
	// Normal is a value within Threshold spreads of the median.
	Normal Colour = iota
	// Low (shown blue) is a value more than Threshold spreads below the median.
	Low
	// High (shown red) is a value more than Threshold spreads above the median.
	High
)

// String returns "normal", "low" or "high"; the web pages use it as a CSS class.
func (c Colour) String() string {
	switch c {
	case Low:
		return "low"
	case High:
		return "high"
	default:
		return "normal"
	}
}

// MedianMAD returns the median of xs and the median absolute deviation
// (the median of |x - median|). NaN and infinite values are ignored. An
// empty input (or one with no finite value) gives 0, 0. xs is not modified.
//
// For an even number of values the median is the mean of the two middle
// values.
func MedianMAD(xs []float64) (median, mad float64) {
	v := finite(xs)
	if len(v) == 0 {
		return 0, 0
	}
	slices.Sort(v)
	median = sortedMedian(v)
	for i, x := range v {
		v[i] = math.Abs(x - median)
	}
	slices.Sort(v)
	return median, sortedMedian(v)
}

// Spread returns the deviation scale to classify against: mad when it is
// positive, otherwise the mean absolute deviation of xs around median (see
// the package comment for why). It returns 0 when every finite value of xs
// equals median, in which case Classify colours nothing.
func Spread(xs []float64, median, mad float64) float64 {
	if mad > 0 {
		return mad
	}
	var sum float64
	n := 0
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		sum += math.Abs(x - median)
		n++
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// Classify returns Low if x < median - Threshold*spread, High if
// x > median + Threshold*spread, and Normal otherwise. A spread of zero or
// less (or a NaN anywhere) gives Normal: with no spread there is no basis
// for calling anything an outlier.
func Classify(x, median, spread float64) Colour {
	if !(spread > 0) || math.IsNaN(x) || math.IsNaN(median) {
		return Normal
	}
	switch {
	case x < median-Threshold*spread:
		return Low
	case x > median+Threshold*spread:
		return High
	default:
		return Normal
	}
}

func finite(xs []float64) []float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	return v
}

func sortedMedian(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
