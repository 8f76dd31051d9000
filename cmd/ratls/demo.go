package main

import (
	"context"
	"errors"
)

func (c *cli) demo(ctx context.Context, args []string) error {
	return errors.New("not yet")
}
