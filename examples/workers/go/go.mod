module jobserver.example/worker

go 1.19
