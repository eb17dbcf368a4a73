package openhands

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(r) }

// decodeArray splits a POST {path}/events body into its events.
func decodeArray(body []byte) ([]json.RawMessage, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, describe(body, err, "a JSON array of events")
	}
	if raw == nil {
		return nil, errors.New("body must be a JSON array of events, got null")
	}
	return raw, nil
}

// decodeObject decodes a POST {path}/conversations body.
func decodeObject(body []byte, v any) error {
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] != '{' {
		return fmt.Errorf("body must be a ConversationInfo JSON object, got %s", jsonKind(t))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return describe(body, err, "a ConversationInfo JSON object")
	}
	return nil
}

// describe names the problem of a body that did not decode.
func describe(body []byte, err error, want string) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return fmt.Errorf("empty body: want %s", want)
	case errors.As(err, &syn):
		return fmt.Errorf("malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ) && typ.Field == "":
		return fmt.Errorf("body must be %s, got %s", want, jsonKind(bytes.TrimSpace(body)))
	case errors.As(err, &typ):
		return fmt.Errorf("field %s must be %s, got a JSON %s (byte %d)", typ.Field, typ.Type, typ.Value, typ.Offset)
	}
	return fmt.Errorf("malformed JSON: %v", err)
}

func jsonKind(b []byte) string {
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
