// Command version prints the version it was built with: testbin's test program.
package main

import "fmt"

var version = "unset"

func main() { fmt.Println(version) }
