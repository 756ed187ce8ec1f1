package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, and a
// document it accepts must validate.
func FuzzParse(f *testing.F) {
	for _, p := range []string{examplePath, "testdata/good.xml", originalFile, "testdata/bad/bad-port.xml", "testdata/bad/malformed.xml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// An empty dir keeps relative paths relative; secret files and
		// Defaults then resolve against the test's folder, which holds none
		// of the fuzzer's names.
		s, err := Parse(data, "")
		if err != nil {
			if s != nil {
				t.Fatal("settings returned with an error")
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if verr := s.Validate(); verr != nil {
			t.Fatalf("Parse accepted settings that do not validate: %v", verr)
		}
	})
}

// TestFuzzCorpusPresent keeps the checked-in seed corpus from going missing.
func TestFuzzCorpusPresent(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzParse/*")
	if err != nil || len(files) < 3 {
		t.Fatalf("seed corpus: %v files, %v", len(files), err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(data), "go test fuzz v1") {
			t.Errorf("%s is not a fuzz corpus file", f)
		}
	}
}
