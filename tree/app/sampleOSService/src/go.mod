module sampleOSService

go 1.19
