package main
import ("testing";"os";"context";"encoding/pem";"github.com/teesql/ratls/ratlstest")
func TestZZWrite(t *testing.T){
	s := ratlstest.StartStack(t, ratlstest.StackOptions{Logger: quietLogger})
	adv, err := s.NewAdversary(ratlstest.SwappedKey); if err != nil { t.Fatal(err) }
	os.WriteFile("/tmp/cli-demo/swapped.pem", pem.EncodeToMemory(&pem.Block{Type:"CERTIFICATE", Bytes: adv.Certificate().Raw}), 0o644)
	_ = context.Background()
}
