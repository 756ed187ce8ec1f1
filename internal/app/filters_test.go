package app

import (
	"reflect"
	"testing"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/config"
)

// TestMessageFiltersFromOriginalFile: the original product's Entry filters reach the call
// manager in order, the disabled one left out, AcceptAndDrop as Drop and RejectWith kept.
func TestMessageFiltersFromOriginalFile(t *testing.T) {
	s, err := config.Load("../config/testdata/acrobits/Settings.xml")
	if err != nil {
		t.Fatal(err)
	}
	got := messageFilters(s.IncomingTextMessage.Filters)
	want := []call.Filter{
		{Action: call.Drop, Headers: []call.HeaderMatch{{Name: "Content-Type", Op: call.Equal, Value: "application/im-iscomposing+xml"}}},
		{Action: call.Reject, Code: 413, Phrase: "Request Entity Too Large",
			Headers: []call.HeaderMatch{{Name: "Content-Length", Op: call.UintGt, Value: "4194304"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("filters %+v\nwant %+v", got, want)
	}
	short := messageFilters(config.Default().IncomingTextMessage.Filters)
	if want := []call.Filter{{ContentType: "application/im-iscomposing+xml", Action: call.Drop}}; !reflect.DeepEqual(short, want) {
		t.Errorf("default filters %+v, want %+v", short, want)
	}
}
