// Package server holds the domain of the livepatch on-prem server: tiers, patches, tokens,
// machines and their reports, the pure rules that decide which patch a machine gets, and the
// Error type that carries a code and a message safe to show to API callers. It imports only
// the standard library; adapters (postgres, httpapi, patchstore, upstream) import it.
package server

import (
	"errors"
	"fmt"
)

// Code classifies an error for API callers; httpapi maps each code to one HTTP status.
type Code string

// Error codes.
const (
	CodeInvalid             Code = "invalid"               // the request is malformed or a value is wrong
	CodeUnauthorized        Code = "unauthorized"          // no or bad credentials
	CodeForbidden           Code = "forbidden"             // credentials fine, action not allowed
	CodeNotFound            Code = "not-found"             // the named thing does not exist
	CodeConflict            Code = "conflict"              // the thing exists or is in use
	CodeTooLarge            Code = "too-large"             // a body over its limit
	CodeUnsupportedType     Code = "unsupported-type"      // a body of a media type the route does not take
	CodeTooManyRequests     Code = "too-many-requests"     // rate or concurrency limit hit
	CodeRangeNotSatisfiable Code = "range-not-satisfiable" // a download's Range asks for no byte of the file
	CodeUnavailable         Code = "unavailable"           // a dependency (database, upstream) is down
	CodeInternal            Code = "internal"              // anything else; the message is generic
)

// Error is an error whose message may be shown to the API caller. It is also the JSON
// body of every error answer of the API, as the server writes it and its clients (the
// admin client, a downstream's sync) read it.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, CodeInternal if there is none.
func ErrorCode(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a generic message
// that hides internal details.
func ErrorMessage(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Message
	}
	return "internal error"
}
